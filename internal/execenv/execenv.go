// Package execenv resolves a model's EXECUTION_ENV_PATH, Triton's
// per-model Python environment: an unpacked environment directory (a venv,
// a conda environment) or a conda-pack style tarball, which is unpacked
// once per content into a cache. The model's stubs then run with that
// environment's interpreter.
//
// Resolution follows Triton's python backend: "$$TRITON_MODEL_DIRECTORY"
// at the start of the value is the model's directory; the path is made
// canonical (symbolic links resolved); a directory is used as it is, a file
// is a tarball; the environment must have bin/activate. The stub is started
// as Triton starts it: VIRTUAL_ENV set to the root, <root>/bin first on
// PATH, <root>/lib first on LD_LIBRARY_PATH, PYTHONHOME unset. vigil adds a
// check at load, so that a broken environment fails the load with a reason
// instead of every stub failing: the interpreter runs, is Python 3.8 or
// newer (what the stub runtime needs), and imports numpy.
package execenv

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Param is the model configuration parameter naming the environment.
const Param = "EXECUTION_ENV_PATH"

// ModelDirToken is replaced by the model's directory.
const ModelDirToken = "$$TRITON_MODEL_DIRECTORY"

// MinPython is the oldest Python the stub runtime supports.
var MinPython = [2]int{3, 8}

// checkTimeout bounds the interpreter check.
const checkTimeout = time.Minute

// Env is a resolved environment.
type Env struct {
	// Root is the environment's directory (for a tarball, where it was
	// unpacked).
	Root string
	// Python is the interpreter's path: <root>/bin/python3 or bin/python.
	Python string
	// Vars are the variables the stub runs with (after the server's).
	Vars []string
	// Unset are variables removed from the stub's environment.
	Unset []string
	// Version is the interpreter's version, e.g. "3.11.7".
	Version string
}

// Cache unpacks tarballs into dir, one directory per content digest, and
// remembers what it unpacked. Its methods may be called concurrently.
type Cache struct {
	dir string
	log *slog.Logger

	mu       sync.Mutex
	unpacked map[string]*unpacking // by digest
}

type unpacking struct {
	done chan struct{}
	root string
	err  error
}

// NewCache returns a cache that unpacks into dir (created when needed).
func NewCache(dir string, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{dir: dir, log: log, unpacked: map[string]*unpacking{}}
}

// Error is a problem with a model's environment; it names the parameter's
// value.
type Error struct {
	Value string // the parameter as configured
	Msg   string
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("parameters %s %q: %s", Param, e.Value, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Resolve finds the environment value names for the model in modelDir,
// unpacking a tarball if needed, and checks its interpreter.
func (c *Cache) Resolve(ctx context.Context, value, modelDir string) (*Env, error) {
	fail := func(err error, format string, args ...any) (*Env, error) {
		return nil, &Error{Value: value, Msg: fmt.Sprintf(format, args...), Err: err}
	}
	p := value
	if strings.HasPrefix(p, ModelDirToken) {
		p = modelDir + strings.TrimPrefix(p, ModelDirToken)
	}
	if strings.TrimSpace(p) == "" {
		return fail(nil, "is empty")
	}
	if !filepath.IsAbs(p) {
		// Triton resolves a relative path against its working directory;
		// a path relative to the model is what a repository means.
		p = filepath.Join(modelDir, p)
	}
	canon, err := filepath.EvalSymlinks(filepath.Clean(p))
	if err != nil {
		return fail(err, "Failed to get the canonical path for %s.", p)
	}
	fi, err := os.Stat(canon)
	if err != nil {
		return fail(err, "%v", err)
	}
	root := canon
	if !fi.IsDir() {
		if root, err = c.unpack(canon); err != nil {
			return fail(err, "cannot unpack %s: %v", canon, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "activate")); err != nil {
		return fail(err, "Path %s does not exist. The Python environment should contain an 'activate' script.",
			filepath.Join(root, "bin", "activate"))
	}
	env := &Env{Root: root, Unset: []string{"PYTHONHOME"}}
	for _, name := range []string{"python3", "python"} {
		cand := filepath.Join(root, "bin", name)
		if st, err := os.Stat(cand); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			env.Python = cand
			break
		}
	}
	if env.Python == "" {
		return fail(nil, "the environment has no interpreter: neither %s nor %s is an executable file",
			filepath.Join(root, "bin", "python3"), filepath.Join(root, "bin", "python"))
	}
	env.Vars = []string{
		"VIRTUAL_ENV=" + root,
		"PATH=" + filepath.Join(root, "bin") + string(os.PathListSeparator) + os.Getenv("PATH"),
		"LD_LIBRARY_PATH=" + joinList(filepath.Join(root, "lib"), os.Getenv("LD_LIBRARY_PATH")),
	}
	if env.Version, err = check(ctx, env); err != nil {
		return fail(err, "%v", err)
	}
	return env, nil
}

func joinList(a, b string) string {
	if b == "" {
		return a
	}
	return a + string(os.PathListSeparator) + b
}

// Environ is the environment of a process run in env: base without the
// unset variables, then env's variables.
func (e *Env) Environ(base []string) []string {
	out := make([]string, 0, len(base)+len(e.Vars))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		unset := false
		for _, u := range e.Unset {
			if k == u {
				unset = true
			}
		}
		if !unset {
			out = append(out, kv)
		}
	}
	return append(out, e.Vars...)
}

// check runs the interpreter: it must be MinPython or newer and import
// numpy. It returns the version.
func check(ctx context.Context, env *Env) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.Python, "-c",
		"import sys\nprint('%d.%d.%d' % sys.version_info[:3], flush=True)\nimport numpy\n")
	cmd.Env = env.Environ(os.Environ())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	version := strings.TrimSpace(stdout.String())
	if version == "" {
		return "", fmt.Errorf("cannot run the interpreter %s: %v: %s", env.Python, runErr, lastLine(stderr.String()))
	}
	parts := strings.SplitN(version, ".", 3)
	major, _ := strconv.Atoi(parts[0])
	minor := 0
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(parts[1])
	}
	if major < MinPython[0] || (major == MinPython[0] && minor < MinPython[1]) {
		return version, fmt.Errorf("%s is Python %s; vigil's stub needs Python %d.%d or newer", env.Python, version, MinPython[0], MinPython[1])
	}
	if runErr != nil {
		return version, fmt.Errorf("%s (Python %s) cannot import numpy, which the stub needs: %s — install it into the environment (%s -m pip install numpy)",
			env.Python, version, lastLine(stderr.String()), env.Python)
	}
	return version, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// unpack extracts the tarball file into the cache, once per content, and
// returns the directory.
func (c *Cache) unpack(file string) (string, error) {
	digest, err := fileDigest(file)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	u := c.unpacked[digest]
	if u == nil {
		u = &unpacking{done: make(chan struct{})}
		c.unpacked[digest] = u
		c.mu.Unlock()
		u.root, u.err = c.extract(file, digest)
		close(u.done)
		if u.err != nil {
			c.mu.Lock()
			delete(c.unpacked, digest) // a later load tries again
			c.mu.Unlock()
		}
		return u.root, u.err
	}
	c.mu.Unlock()
	<-u.done
	return u.root, u.err
}

func fileDigest(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// extract unpacks file into <dir>/<digest>, unless an earlier extraction
// (by this server or an earlier one using the same cache) completed there.
func (c *Cache) extract(file, digest string) (string, error) {
	root := filepath.Join(c.dir, digest)
	complete := filepath.Join(c.dir, digest+".complete")
	if _, err := os.Stat(complete); err == nil {
		c.log.Info("execution environment already unpacked", "tarball", file, "dir", root)
		return root, nil
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(c.dir, digest[:12]+"-unpacking-")
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := untar(file, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	_ = os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.WriteFile(complete, []byte(file+"\n"), 0o644); err != nil {
		return "", err
	}
	c.log.Info("execution environment unpacked", "tarball", file, "dir", root, "took", time.Since(start).Round(time.Millisecond).String())
	return root, nil
}

// untar extracts a tar archive (plain, gzip or bzip2) into dst. Entries
// may not leave dst, directly or through a symbolic link the archive made.
func untar(file, dst string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	magic := make([]byte, 3)
	if _, err := io.ReadFull(f, magic); err != nil {
		return fmt.Errorf("not a tar archive: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	switch {
	case magic[0] == 0x1f && magic[1] == 0x8b:
		gz, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		defer gz.Close()
		r = gz
	case string(magic) == "BZh":
		r = bzip2.NewReader(f)
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		name := filepath.Clean(filepath.FromSlash(strings.TrimPrefix(h.Name, "/")))
		if name == "." {
			continue
		}
		if name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("entry %q leaves the archive's directory", h.Name)
		}
		target := filepath.Join(dst, name)
		if err := insideReal(dst, filepath.Dir(target)); err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
			if err != nil {
				return err
			}
			_, cerr := io.Copy(out, tr)
			if err := errors.Join(cerr, out.Close()); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			src := filepath.Join(dst, filepath.Clean(filepath.FromSlash(strings.TrimPrefix(h.Linkname, "/"))))
			if err := insideReal(dst, src); err != nil {
				return fmt.Errorf("hard link %q: %w", h.Name, err)
			}
			if err := os.Link(src, target); err != nil {
				return err
			}
		default:
			// Devices, FIFOs and the like have no place in an environment.
		}
	}
}

// insideReal checks that path, with symbolic links resolved as far as it
// exists, lies in root.
func insideReal(root, path string) error {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	p := path
	var rest []string
	for {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			full := filepath.Join(append([]string{real}, rest...)...)
			if full != realRoot && !strings.HasPrefix(full, realRoot+string(filepath.Separator)) {
				return fmt.Errorf("leaves the archive's directory (through a symbolic link)")
			}
			return nil
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("cannot resolve %s", path)
		}
		rest = append([]string{filepath.Base(p)}, rest...)
		p = parent
	}
}
