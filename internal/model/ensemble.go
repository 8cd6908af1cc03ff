package model

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/ensemble"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Ensembles: a version of an ensemble has no instances; its requests run
// the plan's steps as internal requests (Call), and its readiness is the
// health engine's, which follows the steps (health.Dependency).

// ensembleOn answers a request to an ensemble version.
func (m *Manager) ensembleOn(ctx context.Context, v *version, req *inference.Request) (*inference.Response, error) {
	if slices.Contains(req.Callers, req.Model) {
		return nil, apierr.New(apierr.Unavailable, "BLS call cycle %s: ensemble %s is already running in this chain, and waiting for it could deadlock", chain(req), req.Model)
	}
	if ready, reason, ok := m.cfg.Health.Snapshot().ModelReady(v.key.Model, v.key.Version); ok && !ready {
		if m.cfg.HideReasons || reason == "" {
			reason = "a step is not ready"
		}
		return nil, apierr.Unavailablef("model %s version %s is not ready: %s", v.key.Model, v.key.Version, reason)
	}
	r := *req
	r.Inputs = append([]tensor.Tensor(nil), req.Inputs...)
	size, err := checkRequest(v.spec.Config, &r, m.cfg.MaxElements)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	v.stats.RecordExecution()
	resp, err := v.spec.Ensemble.Run(ctx, m, &r)
	v.stats.RecordRequest(start, size, err)
	if err != nil {
		return nil, err
	}
	return selectOutputs(v, req, resp)
}

// checkEnsemble validates an ensemble's plan against its steps'
// configurations: the loaded configuration of a step model that serves,
// else its configuration in the repository. Errors use Triton's messages.
func (m *Manager) checkEnsemble(spec *modelconfig.Model) error {
	var missing []string
	for _, name := range spec.Ensemble.Models() {
		if name == spec.Name {
			return apierr.New(apierr.InvalidArgument, "ensemble %s lists itself as a step", name)
		}
		if m.stepConfig(name) == nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return apierr.New(apierr.InvalidArgument, "ensemble %s contains models that are not available or ambiguous: %s", spec.Name, strings.Join(missing, ", "))
	}
	err := spec.Ensemble.Check(spec.Config, func(s ensemble.Step) (*inferencepb.ModelConfig, error) {
		return m.stepConfig(s.Model), nil
	})
	if err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "failed to load ensemble %s", spec.Name)
	}
	return nil
}

// stepConfig is a step model's configuration, or nil if there is none.
func (m *Manager) stepConfig(name string) *inferencepb.ModelConfig {
	m.mu.RLock()
	e := m.models[name]
	var spec *modelconfig.Model
	if e != nil {
		spec = e.spec
	}
	m.mu.RUnlock()
	if spec != nil {
		return spec.Config
	}
	s, _, err := m.readSpec(context.Background(), name, nil)
	if err != nil {
		return nil
	}
	return s.Config
}

// dependencies are the models a version's readiness follows: an
// ensemble's steps, and the health policy's depends_on.
func dependencies(spec *modelconfig.Model) []health.Dependency {
	var deps []health.Dependency
	if spec.Ensemble != nil {
		for _, s := range spec.Ensemble.Steps {
			d := health.Dependency{Model: s.Model, Version: s.Version, Label: "step"}
			if !slices.Contains(deps, d) {
				deps = append(deps, d)
			}
		}
	}
	for _, name := range spec.Policy.DependsOn {
		deps = append(deps, health.Dependency{Model: name, Label: "dependency"})
	}
	return deps
}

// loadSteps loads, in explicit mode, the steps of an ensemble that are not
// loaded, as Triton loads an ensemble's composing models with it; they are
// marked as loaded along with it, for unload_dependents.
func (m *Manager) loadSteps(ctx context.Context, spec *modelconfig.Model) error {
	if m.cfg.Mode != ModeExplicit || spec.Ensemble == nil {
		return nil
	}
	chain, _ := ctx.Value(loadChainKey{}).([]string)
	chain = append(slices.Clip(chain), spec.Name)
	ctx = context.WithValue(ctx, loadChainKey{}, chain)
	for _, name := range spec.Ensemble.Models() {
		if slices.Contains(chain, name) {
			return apierr.New(apierr.InvalidArgument, "ensembles %s form a cycle", strings.Join(append(chain, name), " → "))
		}
		e := m.lookup(name)
		if e != nil && m.serving(e) || !m.inRepository(name) {
			continue // checkEnsemble reports a step that is nowhere
		}
		if err := m.load(ctx, name); err != nil {
			return apierr.Wrap(apierr.CodeOf(err), err, "ensemble %s: loading step model %s", spec.Name, name)
		}
		e = m.lookup(name)
		e.op.Lock()
		e.alongWith = append(e.alongWith, spec.Name)
		e.op.Unlock()
	}
	return nil
}

type loadChainKey struct{}

// unloadDependents unloads, after an ensemble's unload, its step models that
// were loaded only along with it and that no loaded ensemble still uses.
func (m *Manager) unloadDependents(ctx context.Context, spec *modelconfig.Model) error {
	if spec == nil || spec.Ensemble == nil {
		return nil
	}
	var errs []error
	for _, name := range spec.Ensemble.Models() {
		e := m.lookup(name)
		if e == nil {
			continue
		}
		e.op.Lock()
		along := slices.Contains(e.alongWith, spec.Name)
		e.alongWith = slices.DeleteFunc(e.alongWith, func(s string) bool { return s == spec.Name })
		keep := e.explicit || len(e.alongWith) > 0
		e.op.Unlock()
		if !along || keep || m.usedByEnsemble(name) {
			continue
		}
		if err := m.Unload(ctx, name, map[string]any{"unload_dependents": true}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// usedByEnsemble reports whether a loaded ensemble has name as a step.
func (m *Manager) usedByEnsemble(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, e := range m.models {
		if e.spec != nil && e.spec.Ensemble != nil && len(e.versions) > 0 && slices.Contains(e.spec.Ensemble.Models(), name) {
			return true
		}
	}
	return false
}

// prepareEnsemble loads an ensemble's missing steps (explicit mode) and
// checks its plan against their configurations.
func (m *Manager) prepareEnsemble(ctx context.Context, spec *modelconfig.Model) error {
	if err := m.loadSteps(ctx, spec); err != nil {
		return err
	}
	return m.checkEnsemble(spec)
}
