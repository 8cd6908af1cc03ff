package model

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/scheduler"
	"github.com/vigilhq/vigil/internal/tensor"
)

var _ instance.Calls = (*Manager)(nil)

// Call runs a request a model made through BLS. It is an ordinary request
// on the target's queue (statistics, metrics and batching included), with
// three differences that keep a call chain from hanging:
//
//   - a target that is unknown, not loaded or has no routable instance
//     fails at once, with its readiness reason;
//   - a target that is already among req.Callers (a model calling itself,
//     or a cycle) runs only on an instance that is free at that moment, and
//     otherwise fails at once naming the cycle, since the instances it would
//     wait for may be the ones the chain holds;
//   - ctx carries the caller's limits (timeout, its clients, its stub).
func (m *Manager) Call(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	v, err := m.resolve(req.Model, req.Version)
	if err != nil {
		return nil, err
	}
	if v.spec.Ensemble == nil {
		if err := m.routableOrReason(v); err != nil {
			return nil, err
		}
	}
	if v.spec.Config.GetModelTransactionPolicy().GetDecoupled() {
		// Triton's words for this mistake.
		return nil, &apierr.Error{Code: apierr.Unsupported, Err: ErrDecoupled, Msg: "Model " + v.key.Model +
			" is using the decoupled. The current BLS request call doesn't support models using the decoupled transaction policy. " +
			"Please use 'decoupled=True' argument to the 'exec' or 'async_exec' calls for decoupled models."}
	}
	return m.runOn(ctx, v, req, m.callOn)
}

// routableOrReason fails a version that no instance serves right now with
// the readiness reason the health engine gives for it; both from the
// snapshot.
func (m *Manager) routableOrReason(v *version) error {
	snap := m.cfg.Health.Snapshot()
	mh, ok := snap.Model(v.key.Model, v.key.Version)
	if ok && mh.Routable() > 0 {
		return nil
	}
	reason := "no instance is routable"
	if ok {
		if _, r := snap.VersionReady(mh); r != "" && !m.cfg.HideReasons {
			reason = r
		}
	}
	return apierr.Unavailablef("model %s version %s is not ready: %s", v.key.Model, v.key.Version, reason)
}

// callOn is inferOn for a BLS call: a cyclic call does not wait for an
// instance.
func (m *Manager) callOn(ctx context.Context, v *version, req *inference.Request) (*inference.Response, error) {
	if v.spec.Ensemble != nil {
		return m.ensembleOn(ctx, v, req)
	}
	r := *req
	r.Inputs = append([]tensor.Tensor(nil), req.Inputs...)
	size, err := checkRequest(v.spec.Config, &r, m.cfg.MaxElements)
	if err != nil {
		return nil, err
	}
	var resp *inference.Response
	cyclic := slices.Contains(req.Callers, req.Model)
	switch {
	case v.seq != nil && cyclic:
		return nil, sequenceCycleError(req)
	case v.seq != nil:
		// The caller's correlation_id and flags (pb_utils.InferenceRequest)
		// choose the sequence, as for a client's request.
		resp, err = v.seq.Submit(ctx, &r, size)
	case cyclic:
		resp, err = v.queue.SubmitIdle(ctx, &r, size)
		if errors.Is(err, scheduler.ErrNoIdleInstance) {
			return nil, &apierr.Error{Code: apierr.Unavailable, Err: err, Msg: cycleMessage(req, len(v.instances))}
		}
	default:
		resp, err = v.queue.Submit(ctx, &r, size)
	}
	if err != nil {
		return nil, err
	}
	if err := m.holdOutputs(v, resp, size); err != nil {
		resp.Done()
		return nil, err
	}
	out, err := selectOutputs(v, req, resp)
	if err != nil {
		resp.Done()
	}
	return out, err
}

// cycleMessage explains a refused cyclic call, e.g. "BLS call cycle
// ensemble_a → bls_b → bls_b: model bls_b has no free instance (1
// instance, busy in the chain); waiting for one could deadlock".
func cycleMessage(req *inference.Request, instances int) string {
	noun := "instances"
	if instances == 1 {
		noun = "instance"
	}
	return "BLS call cycle " + chain(req) + ": model " + req.Model + " has no free instance (" +
		strconv.Itoa(instances) + " " + noun + ", all busy); waiting for one could deadlock"
}

// sequenceCycleError refuses a call back into a sequence batching model
// from its own chain: a sequence runs one request at a time on the
// instance that holds it, which may be the caller's own, so waiting could
// deadlock.
func sequenceCycleError(req *inference.Request) error {
	return apierr.New(apierr.Unavailable, "BLS call cycle %s: model %s uses sequence batching, and a call back into it could wait for its own sequence", chain(req), req.Model)
}

// chain is a call's path, e.g. "ensemble_a → bls_b → bls_b".
func chain(req *inference.Request) string {
	return strings.Join(append(slices.Clone(req.Callers), req.Model), " → ")
}

// Control serves pb_utils.load_model, unload_model and is_model_ready.
// Loads and unloads follow the repository API (Load, Unload, load_model's
// config= and files= as Load's "config" and "file:<path>" parameters) and,
// as in Triton, are allowed only in explicit model control mode;
// is_model_ready works in every mode. A model may not load or unload
// itself: the call would wait for its own instances.
func (m *Manager) Control(ctx context.Context, req instance.ControlRequest) (bool, error) {
	switch req.Op {
	case "ready":
		ready, _, found := m.cfg.Health.Snapshot().ModelReady(req.Name, req.Version)
		if !found {
			// Triton's wording, which models test for.
			if req.Version != "" {
				return false, apierr.New(apierr.NotFound, "Request for unknown model: '%s' version %s is not found", req.Name, req.Version)
			}
			return false, apierr.New(apierr.NotFound, "Request for unknown model: '%s' is not found", req.Name)
		}
		return ready, nil
	case "load", "unload":
	default:
		return false, apierr.New(apierr.InvalidArgument, "unknown model control operation %q", req.Op)
	}
	if m.cfg.Mode != ModeExplicit {
		return false, apierr.New(apierr.Unsupported, "cannot %s model %s: explicit model load / unload is allowed only with --model-control-mode explicit (this server runs in mode %s)", req.Op, req.Name, m.cfg.Mode)
	}
	if req.Caller == req.Name {
		return false, apierr.New(apierr.InvalidArgument, "model %s cannot %s itself: the call would wait for its own instances", req.Name, req.Op)
	}
	if req.Op == "unload" {
		params := map[string]any{}
		if req.UnloadDependents {
			params["unload_dependents"] = true
		}
		return false, m.Unload(ctx, req.Name, params)
	}
	// load_model(config=, files=) are the repository API's load
	// parameters: the same override path, checks and errors.
	params := make(map[string]any, len(req.Files)+1)
	if req.Config != "" {
		params["config"] = req.Config
	}
	for k, v := range req.Files {
		if !strings.HasPrefix(k, modelconfig.FileParamPrefix) {
			return false, apierr.New(apierr.InvalidArgument, "failed to load '%s': load_model files key %q must be %q followed by a path in the model directory, e.g. \"file:1/model.py\"", req.Name, k, modelconfig.FileParamPrefix)
		}
		params[k] = v
	}
	return false, m.Load(ctx, req.Name, params)
}

// CallStream runs a BLS call made with exec(decoupled=True): every response
// of the target goes to emit as it comes, the last with final set (a
// default-mode target or an ensemble gives one). It fails fast as Call
// does; a cyclic call runs only while an instance of the target is free.
func (m *Manager) CallStream(ctx context.Context, req *inference.Request, emit func(resp *inference.Response, err error, final bool) error) error {
	v, err := m.resolve(req.Model, req.Version)
	if err != nil {
		return err
	}
	if v.spec.Ensemble != nil {
		resp, err := m.Call(ctx, req)
		return emit(resp, err, true)
	}
	if err := m.routableOrReason(v); err != nil {
		return err
	}
	if slices.Contains(req.Callers, req.Model) && v.seq != nil {
		return sequenceCycleError(req)
	}
	if slices.Contains(req.Callers, req.Model) && !v.queue.HasIdle() {
		return &apierr.Error{Code: apierr.Unavailable, Err: scheduler.ErrNoIdleInstance, Msg: cycleMessage(req, len(v.instances))}
	}
	return m.InferStream(ctx, req, func(r Reply) error { return emit(r.Response, r.Err, r.Final) })
}
