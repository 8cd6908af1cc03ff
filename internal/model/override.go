package model

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/execenv"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/modelconfig"
)

// stubAutoCompleter runs auto_complete_config in a short-lived stub
// process, in the model's execution environment when its configuration
// names one.
type stubAutoCompleter struct {
	m   *Manager
	log *slog.Logger
}

func (a stubAutoCompleter) AutoComplete(ctx context.Context, modelFile, modelDir string, config []byte) ([]byte, bool, error) {
	var partial struct {
		Parameters map[string]struct {
			StringValue string `json:"string_value"`
		} `json:"parameters"`
	}
	_ = json.Unmarshal(config, &partial)
	params := map[string]*inferencepb.ModelParameter{}
	for k, v := range partial.Parameters {
		params[k] = &inferencepb.ModelParameter{StringValue: v.StringValue}
	}
	rt, err := a.m.runtimeFor(ctx, params, modelDir)
	if err != nil {
		return nil, false, err
	}
	return instance.AutoComplete(ctx, rt, a.log, modelFile, modelDir, config)
}

// runtimeFor is the runtime of a model's stubs: the server's, or with the
// interpreter of the EXECUTION_ENV_PATH parameter.
func (m *Manager) runtimeFor(ctx context.Context, params map[string]*inferencepb.ModelParameter, modelDir string) (instance.Runtime, error) {
	rt := m.cfg.Runtime
	p, ok := params[execenv.Param]
	if !ok {
		return rt, nil
	}
	env, err := m.envs.Resolve(ctx, p.GetStringValue(), modelDir)
	if err != nil {
		return rt, err
	}
	rt.Python = env.Python
	rt.Env = append(slices.Clone(rt.Env), env.Vars...)
	rt.Unset = append(slices.Clone(rt.Unset), env.Unset...)
	m.log.Info("model runs in its execution environment", "dir", modelDir, "env", env.Root, "python", env.Python, "python_version", env.Version)
	return rt, nil
}

// envCacheDir is where EXECUTION_ENV_PATH tarballs are unpacked.
func (m *Manager) envCacheDir() string {
	if m.cfg.EnvCacheDir != "" {
		return m.cfg.EnvCacheDir
	}
	return filepath.Join(os.TempDir(), "vigil-envs")
}

// loadOverride turns a load request's parameters into an Override: the
// config, and the files written to a fresh directory under the scratch
// directory. Nil when the request has neither. Errors are the API's:
// parameters that are wrong are the client's (InvalidArgument), files that
// cannot be written the server's (Internal), worded as Triton words a
// repository it cannot read.
func (m *Manager) loadOverride(name string, params map[string]any) (*modelconfig.Override, error) {
	config, files, err := modelconfig.LoadParams(name, params)
	if err != nil {
		return nil, apierr.LoadFailed(apierr.InvalidArgument, err, name)
	}
	if config == nil {
		return nil, nil
	}
	ov := &modelconfig.Override{Config: config}
	if len(files) > 0 {
		parent := m.cfg.ScratchDir
		if parent == "" {
			parent = filepath.Join(os.TempDir(), "vigil-overrides")
		}
		if ov.Dir, err = modelconfig.WriteFiles(parent, name, files); err != nil {
			return nil, apierr.Wrap(apierr.Internal, err, "failed to load '%s', failed to poll from model repository: cannot write the load request's files", name)
		}
	}
	return ov, nil
}

// swapOverride records the override a successful load serves with (nil:
// the model's own files) and removes the files of the one before. The
// caller holds e.op.
func (m *Manager) swapOverride(e *entry, ov *modelconfig.Override) {
	dir := ""
	if ov != nil {
		dir = ov.Dir
	}
	if e.overrideDir != "" && e.overrideDir != dir {
		removeOverride(e.overrideDir)
	}
	e.overrideDir = dir
}

// removeOverride removes a directory WriteFiles made (its parent, which
// holds only it).
func removeOverride(dir string) {
	_ = os.RemoveAll(filepath.Dir(dir))
}

// warmups are the model_warmup samples of a version's instances.
func warmups(spec *modelconfig.Model, version string) []instance.Warmup {
	var out []instance.Warmup
	for _, w := range spec.Warmup {
		reqs := make([]*inference.Request, len(w.Requests))
		for i, r := range w.Requests {
			c := *r
			c.Version = version
			reqs[i] = &c
		}
		out = append(out, instance.Warmup{Name: w.Name, Requests: reqs, Count: w.Count})
	}
	return out
}
