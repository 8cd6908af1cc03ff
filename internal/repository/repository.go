// Package repository finds models in a Triton-style model repository and
// tells when one changed on disk.
//
// A model is a subdirectory of the repository, with a valid name (ValidName),
// that holds a config.pbtxt, or that holds none but whose first version
// directory (in lexicographic order, as Triton picks it) holds model.py:
// such a model's configuration comes from auto-complete. Other entries
// (files, hidden directories such as .git, directories that are neither)
// are not models; Survey says why each directory was passed over.
//
// Fingerprint summarizes everything under a model directory that makes up
// the model: the content of config.pbtxt and health.yaml, and the name,
// type, size and modification time of every other file and directory, at any
// depth, following symbolic links (Kubernetes ConfigMap volumes are made of
// them). Hidden entries (editor swap files, ..data of ConfigMaps) and
// __pycache__ directories, which Python writes next to model.py when the stub
// imports it, are left out so that running a model does not make it look
// changed. Poll mode compares fingerprints to decide what to reload.
package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vigilhq/vigil/internal/apierr"
)

// ErrInvalidName is wrapped by the errors of ValidName. They are also
// classified apierr.InvalidArgument, so an API request naming such a model
// is a bad request.
var ErrInvalidName = errors.New("invalid model name")

const (
	configFile = "config.pbtxt"
	healthFile = "health.yaml"
	// maxDepth bounds the walk under a model directory, which also stops a
	// symbolic link loop.
	maxDepth = 16
)

// Scan lists the models of the repository repoDir, sorted by name.
func Scan(repoDir string) ([]string, error) {
	sv, err := Survey(repoDir)
	if err != nil {
		return nil, err
	}
	return sv.Models, nil
}

// Skipped is a directory entry of the repository that is not a model.
type Skipped struct {
	Name   string
	Reason string
	// Hidden is set for entries whose name starts with a dot (.git, the
	// ..data links of Kubernetes ConfigMap volumes): skipped by design.
	Hidden bool
}

// Surveyed is what Survey found in a repository.
type Surveyed struct {
	Models []string // sorted by name
	// Skipped are the subdirectories (or links to directories, or
	// entries that cannot be read) that are not models, sorted by name.
	// Plain files are not listed.
	Skipped []Skipped
	// IsModel is set when the repository directory itself holds a
	// config.pbtxt: it is a model's folder, not a repository.
	IsModel bool
}

// Survey lists the models of the repository repoDir and says why every
// other directory in it is not one.
func Survey(repoDir string) (Surveyed, error) {
	var sv Surveyed
	entries, err := os.ReadDir(repoDir)
	if err != nil {
		return sv, fmt.Errorf("cannot read model repository: %w", err)
	}
	if fi, err := os.Stat(filepath.Join(repoDir, configFile)); err == nil && fi.Mode().IsRegular() {
		sv.IsModel = true
	}
	for _, e := range entries {
		name := e.Name()
		// Stat follows symbolic links: a linked model directory is a model.
		fi, err := os.Stat(filepath.Join(repoDir, name))
		switch {
		case err != nil:
			sv.Skipped = append(sv.Skipped, Skipped{Name: name, Reason: "cannot be read: " + err.Error(), Hidden: strings.HasPrefix(name, ".")})
			continue
		case !fi.IsDir():
			continue
		}
		if err := ValidName(name); err != nil {
			sv.Skipped = append(sv.Skipped, Skipped{Name: name, Reason: err.Error(), Hidden: strings.HasPrefix(name, ".")})
			continue
		}
		if why := whyNotModel(filepath.Join(repoDir, name)); why != "" {
			sv.Skipped = append(sv.Skipped, Skipped{Name: name, Reason: why})
			continue
		}
		sv.Models = append(sv.Models, name)
	}
	sort.Strings(sv.Models)
	sort.Slice(sv.Skipped, func(i, j int) bool { return sv.Skipped[i].Name < sv.Skipped[j].Name })
	return sv, nil
}

// IsModel reports whether the repository holds the model name (as Scan
// would list it).
func IsModel(repoDir, name string) bool {
	if ValidName(name) != nil {
		return false
	}
	dir := filepath.Join(repoDir, name)
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir() && whyNotModel(dir) == ""
}

// whyNotModel is "" for a model directory, else why it is not one.
func whyNotModel(dir string) string {
	cfg, err := os.Stat(filepath.Join(dir, configFile))
	switch {
	case err == nil && cfg.Mode().IsRegular():
		return ""
	case err == nil:
		return "its " + configFile + " is not a regular file"
	case !errors.Is(err, fs.ErrNotExist):
		return "cannot read its " + configFile + ": " + err.Error()
	}
	first := firstVersionDir(dir)
	if first == "" {
		return "no " + configFile + " and no version directory: a model needs " + configFile +
			", or a <version>/" + pythonModelFile + " whose auto_complete_config provides the configuration"
	}
	if !FirstVersionHas(dir, pythonModelFile) {
		return "no " + configFile + ", and the first version directory " + first + "/ has no " + pythonModelFile +
			" to auto-complete a configuration from"
	}
	return ""
}

// pythonModelFile is the model file auto-complete looks for.
const pythonModelFile = "model.py"

// firstVersionDir is the first subdirectory of dir, in lexicographic order,
// whose name is a positive integer, or "".
func firstVersionDir(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if n == "" || n[0] == '0' || strings.Trim(n, "0123456789") != "" {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, n)); err == nil && fi.IsDir() {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return names[0]
}

// FirstVersionHas reports whether the first version directory of the model
// directory dir (lexicographic order, as Triton's auto-complete takes it)
// holds the regular file file.
func FirstVersionHas(dir, file string) bool {
	first := firstVersionDir(dir)
	if first == "" {
		return false
	}
	fi, err := os.Stat(filepath.Join(dir, first, file))
	return err == nil && fi.Mode().IsRegular()
}

// ValidName checks that name can name a model directory of the repository
// and nothing outside it: not empty, not "." or "..", no path separator, no
// NUL or other control character, no leading dot (hidden entries are not
// models).
func ValidName(name string) error {
	var why string
	switch {
	case name == "":
		why = "empty"
	case name == "." || name == "..":
		why = "not a directory name"
	case strings.HasPrefix(name, "."):
		why = "must not start with a dot"
	case strings.ContainsAny(name, `/\`):
		why = "must not contain a path separator"
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		why = "must not contain control characters"
	default:
		return nil
	}
	return &apierr.Error{
		Code: apierr.InvalidArgument,
		Msg:  fmt.Sprintf("invalid model name %q: %s", name, why),
		Err:  ErrInvalidName,
	}
}

// Fingerprint returns a digest of the model directory name of the
// repository that changes whenever config.pbtxt, health.yaml or any version
// directory or file under it changes. When the model directory does not
// exist the error wraps fs.ErrNotExist.
func Fingerprint(repoDir, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	dir := filepath.Join(repoDir, name)
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("model %q: %w", name, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("model %q: %s is not a directory", name, dir)
	}
	h := sha256.New()
	if err := fingerprintDir(h, dir, "", 0); err != nil {
		return "", fmt.Errorf("model %q: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fingerprintDir writes one record per entry of dir (rel is its path under
// the model directory) into h, in name order, and recurses into
// directories.
func fingerprintDir(h hash.Hash, dir, rel string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: directories nested deeper than %d levels (a symbolic link loop?)", dir, maxDepth)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || name == "__pycache__" {
			continue
		}
		path := filepath.Join(dir, name)
		relPath := filepath.ToSlash(filepath.Join(rel, name))
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// A dangling symbolic link, or an entry removed since ReadDir:
			// record it as missing, which differs from any real entry.
			fmt.Fprintf(h, "%q missing\n", relPath)
			continue
		case err != nil:
			return fmt.Errorf("cannot stat %s: %w", path, err)
		}
		if fi.IsDir() {
			fmt.Fprintf(h, "%q dir\n", relPath)
			if err := fingerprintDir(h, path, relPath, depth+1); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(h, "%q %v %d %d\n", relPath, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if rel == "" && (name == configFile || name == healthFile) {
			// The configuration is small and decides everything: hash its
			// content so an edit is seen even within the timestamp
			// granularity of the file system.
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("cannot read %s: %w", path, err)
			}
			fmt.Fprintf(h, "%d\n", len(data))
			h.Write(data)
		}
	}
	return nil
}
