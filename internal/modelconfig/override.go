package modelconfig

import (
	"encoding/base64"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// Override is what a repository load request puts in place of the model's
// files for that load, as Triton's load API does: Config (the "config"
// parameter, a ModelConfig as JSON) replaces config.pbtxt, and Dir, when
// set, is a directory holding the request's "file:<path>" contents, which
// is then the model directory for this load.
type Override struct {
	Config []byte
	Dir    string
}

// overrideSource names the load request's configuration in messages.
const overrideSource = `load request parameter "config"`

// unknownJSONField matches protojson's unknown-field error.
var unknownJSONField = regexp.MustCompile(`unknown field "([^"]+)"`)

// parse reads Config as Triton's JSON form of a ModelConfig. Fields vigil
// does not implement are refused as they are in config.pbtxt.
func (o *Override) parse() (*inferencepb.ModelConfig, string, error) {
	cfg := &inferencepb.ModelConfig{}
	if err := protojson.Unmarshal(o.Config, cfg); err != nil {
		msg := strings.TrimSpace(protoPrefix.ReplaceAllString(err.Error(), ""))
		e := &Error{File: overrideSource, Msg: msg, Err: err}
		if m := unknownJSONField.FindStringSubmatch(msg); m != nil {
			e.Field = m[1]
			e.Msg = unknownFieldMessage(m[1])
		}
		return nil, overrideSource, e
	}
	return cfg, overrideSource, nil
}

// FileParamPrefix starts the load parameters that carry a file.
const FileParamPrefix = "file:"

// LoadParams splits the parameters of a repository load request into the
// configuration override and the files. HTTP sends file contents as
// base64 strings, gRPC as bytes. Any other parameter is an error naming
// it, as are files without a config (Triton's rule) and file paths that
// are absolute or leave the model directory.
func LoadParams(model string, params map[string]any) (config []byte, files map[string][]byte, err error) {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := params[k]
		switch {
		case k == "config":
			s, ok := v.(string)
			if !ok {
				return nil, nil, fmt.Errorf("load parameter \"config\" must be a string holding the model configuration as JSON, got %T", v)
			}
			config = []byte(s)
		case strings.HasPrefix(k, FileParamPrefix):
			rel := strings.TrimPrefix(k, FileParamPrefix)
			if err := relativeFile(rel); err != nil {
				return nil, nil, fmt.Errorf("load parameter %q: %w", k, err)
			}
			var data []byte
			switch c := v.(type) {
			case []byte:
				data = c
			case string:
				if data, err = base64.StdEncoding.DecodeString(c); err != nil {
					return nil, nil, fmt.Errorf("load parameter %q: the file content must be base64: %w", k, err)
				}
			default:
				return nil, nil, fmt.Errorf("load parameter %q must be the file's content (base64 over HTTP, bytes over gRPC), got %T", k, v)
			}
			if files == nil {
				files = map[string][]byte{}
			}
			files[path.Clean(rel)] = data
		default:
			return nil, nil, fmt.Errorf("unknown load parameter %q: vigil accepts \"config\" and \"file:<version>/<file>\"", k)
		}
	}
	if len(files) > 0 && config == nil {
		return nil, nil, fmt.Errorf("load parameters file:... need the \"config\" parameter too (the files replace the model directory for this load)")
	}
	return config, files, nil
}

// relativeFile accepts a slash-separated path inside the model directory.
func relativeFile(rel string) error {
	clean := path.Clean(rel)
	switch {
	case rel == "" || clean == ".":
		return fmt.Errorf("the file path is empty")
	case strings.HasPrefix(rel, "/") || filepath.IsAbs(rel):
		return fmt.Errorf("the file path must be relative to the model directory")
	case clean == ".." || strings.HasPrefix(clean, "../"):
		return fmt.Errorf("the file path leaves the model directory")
	case strings.ContainsRune(rel, 0) || strings.Contains(rel, `\`):
		return fmt.Errorf("the file path has a NUL or a backslash")
	}
	return nil
}

// WriteFiles creates a fresh directory under parent holding files (paths
// relative to it) and returns it: the model directory of a load with file
// overrides. The caller removes it when the load no longer serves.
func WriteFiles(parent, model string, files map[string][]byte) (string, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	base, err := os.MkdirTemp(parent, "override-")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(base, model)
	for rel, data := range files {
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			os.RemoveAll(base)
			return "", err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			os.RemoveAll(base)
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		os.RemoveAll(base)
		return "", err
	}
	return dir, nil
}
