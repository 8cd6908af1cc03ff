package modelconfig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/repository"
)

// AutoCompleter runs a model's TritonPythonModel.auto_complete_config on a
// configuration (JSON in Triton's form) and returns the completed one.
// called is false when the model defines no auto_complete_config.
type AutoCompleter interface {
	AutoComplete(ctx context.Context, modelFile, modelDir string, config []byte) (out []byte, called bool, err error)
}

// Options says how LoadWith completes a model's configuration.
type Options struct {
	// AutoComplete, when set, lets a model without config.pbtxt load and
	// runs auto_complete_config (see autoCompletes). Nil is Triton's
	// --disable-auto-complete-config.
	AutoComplete AutoCompleter
	// Partial validates what does not depend on auto-complete and leaves
	// out the inputs and outputs it may add, without running Python (for
	// tools that only need instance counts and policies). It is ignored
	// when AutoComplete is set.
	Partial bool
	// Override replaces config.pbtxt and adds files for this load (the
	// repository load API's config and file: parameters).
	Override *Override
}

// autoCompleteMarker is the method name whose presence in model.py's text
// makes a model with a config.pbtxt worth an auto-complete process.
var autoCompleteMarker = []byte("auto_complete_config")

// readConfig reads the configuration of the model in dir (rel is the path
// used in messages) before validation: config.pbtxt, or an empty
// configuration when there is none and auto-complete is on. missing
// reports the latter.
func readConfig(rel string, opts Options) (cfg *inferencepb.ModelConfig, file string, missing bool, err error) {
	file = filepath.Join(rel, ConfigFileName)
	data, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if opts.AutoComplete == nil && !opts.Partial {
			return nil, file, true, &Error{File: file, Err: err,
				Msg: "missing, and auto-complete is off (--disable-auto-complete-config): a model without config.pbtxt needs auto_complete_config"}
		}
		return &inferencepb.ModelConfig{}, file, true, nil
	case err != nil:
		return nil, file, false, fmt.Errorf("cannot read configuration: %w", err)
	}
	cfg = &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal(data, cfg); err != nil {
		return nil, file, false, textError(file, data, err)
	}
	return cfg, file, false, nil
}

// autoComplete fills in what Triton's core fills in before the backend
// sees a configuration (the name, and backend "python" when the first
// version directory holds model.py) and then runs the model's
// auto_complete_config when it may have one: always for a model without
// config.pbtxt, otherwise when model.py mentions auto_complete_config
// (which spares every other model a Python start at load). It returns
// where the configuration came from, for messages.
func autoComplete(ctx context.Context, cfg *inferencepb.ModelConfig, name, dir, file string, missing bool, opts Options) (*inferencepb.ModelConfig, string, error) {
	if cfg.GetName() == "" {
		cfg.Name = name
	}
	if opts.AutoComplete == nil && !opts.Partial {
		return cfg, file, nil
	}
	if cfg.GetBackend() == "" && cfg.GetPlatform() == "" && repository.FirstVersionHas(dir, DefaultModelFilename) {
		cfg.Backend = "python"
	}
	if opts.AutoComplete == nil || cfg.GetPlatform() == EnsemblePlatform {
		return cfg, file, nil // an ensemble has no model file to ask
	}
	filename := cfg.GetDefaultModelFilename()
	if filename == "" {
		filename = DefaultModelFilename
	}
	modelFile, ok := newestModelFile(dir, filename)
	if !ok {
		return cfg, file, nil // selectVersions explains what is missing
	}
	if !missing {
		src, err := os.ReadFile(modelFile)
		if err != nil || !bytes.Contains(src, autoCompleteMarker) {
			return cfg, file, nil
		}
	}
	in, err := ToJSON(cfg)
	if err != nil {
		return nil, file, err
	}
	out, called, err := opts.AutoComplete.AutoComplete(ctx, modelFile, dir, in)
	if err != nil {
		return nil, file, &Error{File: modelFile, Msg: "auto-complete failed: " + err.Error(), Err: err}
	}
	if !called {
		return cfg, file, nil
	}
	source := modelFile + " auto_complete_config"
	completed := &inferencepb.ModelConfig{}
	if err := protojson.Unmarshal(out, completed); err != nil {
		msg := protoPrefix.ReplaceAllString(err.Error(), "")
		return nil, source, &Error{File: source, Err: err,
			Msg: "the configuration it returned is not a configuration vigil supports: " + msg}
	}
	return completed, source, nil
}

// newestModelFile is the model file of the newest version directory.
func newestModelFile(dir, filename string) (string, bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", false
	}
	var versions []int64
	for _, e := range entries {
		if v, ok := parseVersion(e.Name()); ok {
			if fi, err := os.Stat(filepath.Join(dir, e.Name(), filename)); err == nil && fi.Mode().IsRegular() {
				versions = append(versions, v)
			}
		}
	}
	if len(versions) == 0 {
		return "", false
	}
	v := slices.Max(versions)
	return filepath.Join(dir, fmt.Sprint(v), filename), true
}
