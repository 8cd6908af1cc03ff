package model

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/scheduler"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Infer checks a request against the model's configuration, queues it for
// the model's instances and returns the outputs the client asked for.
func (m *Manager) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	v, err := m.resolve(req.Model, req.Version)
	if err != nil {
		return nil, err
	}
	if v.spec.Config.GetModelTransactionPolicy().GetDecoupled() {
		return nil, decoupledError(v.key.Model)
	}
	return m.runOn(ctx, v, req, m.inferOn)
}

// runOn runs req on version v with run and records it in the metrics. A
// reload that switched versions between resolve and submit hands the
// request to the replacement, if there is one.
func (m *Manager) runOn(ctx context.Context, v *version, req *inference.Request,
	run func(context.Context, *version, *inference.Request) (*inference.Response, error)) (*inference.Response, error) {
	start := time.Now()
	key := v.key
	resp, err := run(ctx, v, req)
	if errors.Is(err, errReplaced) {
		if next, rerr := m.resolve(req.Model, req.Version); rerr != nil {
			err = rerr
		} else if next != v {
			resp, err = run(ctx, next, req)
		}
	}
	m.metrics.observe(key.Model, key.Version, start, err)
	return resp, err
}

// inferOn runs req on one version. req itself is not modified, so that it
// can be retried on another version.
func (m *Manager) inferOn(ctx context.Context, v *version, req *inference.Request) (*inference.Response, error) {
	if v.spec.Ensemble != nil {
		return m.ensembleOn(ctx, v, req)
	}
	r := *req
	r.Inputs = append([]tensor.Tensor(nil), req.Inputs...)
	size, err := checkRequest(v.spec.Config, &r, m.cfg.MaxElements)
	if err != nil {
		return nil, err
	}
	ticket := v.order.Issue()
	var resp *inference.Response
	if v.seq != nil {
		resp, err = v.seq.Submit(ctx, &r, size)
	} else {
		resp, err = v.queue.Submit(ctx, &r, size)
	}
	// preserve_ordering: an answer, errors included, waits for the
	// requests that arrived before it.
	if terr := v.order.Turn(ctx, ticket); terr != nil && err == nil {
		return nil, apierr.Wrap(apierr.DeadlineExceeded, terr, "model %s: request ended while an earlier request's response was pending (preserve_ordering)", v.key.Model)
	}
	if err != nil {
		return nil, m.unroutable(v, err)
	}
	if err := m.holdOutputs(v, resp, size); err != nil {
		return nil, err
	}
	return selectOutputs(v, req, resp)
}

// unroutable explains a refusal for want of a routable instance (only that:
// a request that failed on its instance keeps its own error) with the
// health snapshot: why the version is not ready and when to retry. A
// version whose instances have all exhausted their restarts is retried at
// the maximum backoff, so Retry-After says when that is, not "1 s".
func (m *Manager) unroutable(v *version, err error) error {
	if !errors.Is(err, scheduler.ErrNoRoutable) {
		return err
	}
	snap := m.cfg.Health.Snapshot()
	mh, ok := snap.Model(v.key.Model, v.key.Version)
	if !ok {
		return err
	}
	_, reason := snap.VersionReady(mh)
	retry := time.Second
	var next time.Time
	failed := len(mh.Instances) > 0
	for _, in := range mh.Instances {
		if in.State != health.StateFailed {
			failed = false
		}
		if !in.RestartAt.IsZero() && (next.IsZero() || in.RestartAt.Before(next)) {
			next = in.RestartAt
		}
	}
	if failed && !next.IsZero() {
		retry = max(time.Until(next), time.Second)
	}
	msg := fmt.Sprintf("model %s version %s has no routable instance", v.key.Model, v.key.Version)
	if reason != "" && !m.cfg.HideReasons {
		msg += ": " + reason
	}
	return &apierr.Error{Code: apierr.Unavailable, Msg: msg, RetryAfter: retry, Err: err}
}

// checkRequest validates req against cfg, applies input reshapes, and
// returns the request's batch size (1 for models that do not batch).
func checkRequest(cfg *inferencepb.ModelConfig, req *inference.Request, maxElements int64) (int, error) {
	name := cfg.GetName()
	batching := cfg.GetMaxBatchSize() > 0
	seen := make(map[string]bool, len(req.Inputs))
	size := 1
	for i := range req.Inputs {
		in := &req.Inputs[i]
		if seen[in.Name] {
			return 0, apierr.New(apierr.InvalidArgument, "model %s: input %q appears twice", name, in.Name)
		}
		seen[in.Name] = true
		ic := inputConfig(cfg, in.Name)
		if ic == nil {
			return 0, apierr.New(apierr.InvalidArgument, "model %s has no input named %q", name, in.Name)
		}
		want := modelconfig.DatatypeOf(ic.GetDataType())
		if in.Datatype != want {
			return 0, apierr.New(apierr.InvalidArgument, "model %s: input %q has datatype %s, expected %s", name, in.Name, in.Datatype, want)
		}
		dims := ic.GetDims()
		shape := in.Shape
		if batching {
			if len(shape) == 0 {
				return 0, apierr.New(apierr.InvalidArgument, "model %s: input %q needs a batch dimension, got shape %v", name, in.Name, in.Shape)
			}
			b := shape[0]
			if b < 1 || b > int64(cfg.GetMaxBatchSize()) {
				return 0, apierr.New(apierr.InvalidArgument, "model %s: input %q has batch size %d, must be 1 to %d", name, in.Name, b, cfg.GetMaxBatchSize())
			}
			if i == 0 {
				size = int(b)
			} else if int(b) != size {
				return 0, apierr.New(apierr.InvalidArgument, "model %s: input %q has batch size %d, other inputs have %d", name, in.Name, b, size)
			}
			shape = shape[1:]
		}
		if !shapeMatches(shape, dims) {
			return 0, apierr.New(apierr.InvalidArgument, "model %s: input %q has shape %v, expected %s", name, in.Name, in.Shape, describeDims(dims, batching))
		}
		if n, _ := tensor.ElementCount(in.Shape); maxElements > 0 && n > maxElements {
			return 0, apierr.New(apierr.InvalidArgument, "model %s: input %q has %d elements, more than the limit of %d (--max-tensor-elements)", name, in.Name, n, maxElements)
		}
		if err := in.Validate(); err != nil {
			return 0, apierr.Wrap(apierr.InvalidArgument, err, "model %s", name)
		}
		if rs := ic.GetReshape(); rs != nil {
			reshaped := append([]int64(nil), rs.GetShape()...)
			if batching {
				reshaped = append([]int64{in.Shape[0]}, reshaped...)
			}
			in.Shape = reshaped
		}
	}
	for _, ic := range cfg.GetInput() {
		if !seen[ic.GetName()] && !ic.GetOptional() {
			return 0, apierr.New(apierr.InvalidArgument, "model %s: missing input %q", name, ic.GetName())
		}
	}
	for _, o := range req.Outputs {
		if outputConfig(cfg, o.Name) == nil {
			return 0, apierr.New(apierr.InvalidArgument, "model %s has no output named %q", name, o.Name)
		}
	}
	return size, nil
}

func inputConfig(cfg *inferencepb.ModelConfig, name string) *inferencepb.ModelInput {
	for _, ic := range cfg.GetInput() {
		if ic.GetName() == name {
			return ic
		}
	}
	return nil
}

func outputConfig(cfg *inferencepb.ModelConfig, name string) *inferencepb.ModelOutput {
	for _, oc := range cfg.GetOutput() {
		if oc.GetName() == name {
			return oc
		}
	}
	return nil
}

// shapeMatches compares a shape with configured dims, -1 matching any size.
func shapeMatches(shape, dims []int64) bool {
	if len(shape) != len(dims) {
		return false
	}
	for i, d := range dims {
		if d != -1 && d != shape[i] {
			return false
		}
	}
	return true
}

func describeDims(dims []int64, batching bool) string {
	if batching {
		return fmt.Sprint(append([]int64{-1}, dims...))
	}
	return fmt.Sprint(dims)
}

// selectOutputs keeps the outputs the client asked for, in its order, and
// labels the response.
func selectOutputs(v *version, req *inference.Request, resp *inference.Response) (*inference.Response, error) {
	out := &inference.Response{Model: v.key.Model, Version: v.key.Version, ID: req.ID, Parameters: resp.Parameters, Release: resp.Release}
	if len(req.Outputs) == 0 {
		out.Outputs = resp.Outputs
		return out, nil
	}
	byName := make(map[string]*tensor.Tensor, len(resp.Outputs))
	for i := range resp.Outputs {
		byName[resp.Outputs[i].Name] = &resp.Outputs[i]
	}
	for _, o := range req.Outputs {
		t := byName[o.Name]
		if t == nil {
			return nil, apierr.New(apierr.Internal, "model %s did not return the requested output %q", v.key.Model, o.Name)
		}
		c := *t
		c.Parameters = o.Parameters
		out.Outputs = append(out.Outputs, c)
	}
	return out, nil
}
