package model

import (
	"log/slog"
	"slices"
	"sync"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Outputs: what a model returns is held to its configuration on every path
// that returns outputs (unary HTTP and gRPC, streams, generate, BLS calls,
// ensemble steps), all through Manager.holdOutputs.
//
// A datatype that differs from the declaration is passed through as the
// model returned it, as Triton's python_backend does (it hands each tensor
// to the server with its own datatype, and the server checks only that the
// output is declared): the response carries the returned datatype, and the
// server log gets one warning per model, output and datatype. Everything
// else stays an error (500 naming the output): an undeclared output, one
// returned twice, and a shape that does not fit the declared dims.

// datatypeDiff is an output whose datatype differs from its declaration.
type datatypeDiff struct {
	output   string
	returned tensor.Datatype
	declared tensor.Datatype
}

// holdOutputs checks resp, a response of version v to a request of batch
// size size, against v's configuration (see checkOutputs) and warns about
// the datatypes it passes through.
func (m *Manager) holdOutputs(v *version, resp *inference.Response, size int) error {
	diffs, err := checkOutputs(v.spec.Config, resp, size)
	for _, d := range diffs {
		m.datatypes.warn(v.key.Model, v.key.Version, d)
	}
	return err
}

// checkOutputs holds what the model returned to its configuration: every
// output declared, once, with the declared dims (and the request's batch
// size first for batching models); outputs with a reshape get their
// declared dims. Clients rely on the metadata; a model that breaks it gets
// 500 naming the output. Datatypes are not held: the outputs whose
// datatype differs from the declaration are returned in diffs.
func checkOutputs(cfg *inferencepb.ModelConfig, resp *inference.Response, size int) (diffs []datatypeDiff, err error) {
	name := cfg.GetName()
	batching := cfg.GetMaxBatchSize() > 0
	seen := make(map[string]bool, len(resp.Outputs))
	for i := range resp.Outputs {
		o := &resp.Outputs[i]
		if seen[o.Name] {
			return diffs, apierr.New(apierr.Internal, "model %s returned output %q twice", name, o.Name)
		}
		seen[o.Name] = true
		oc := outputConfig(cfg, o.Name)
		if oc == nil {
			return diffs, apierr.New(apierr.Internal, "model %s returned output %q, which its config.pbtxt does not declare", name, o.Name)
		}
		if want := modelconfig.DatatypeOf(oc.GetDataType()); o.Datatype != want {
			diffs = append(diffs, datatypeDiff{output: o.Name, returned: o.Datatype, declared: want})
		}
		shape := o.Shape
		if batching {
			if len(shape) == 0 || shape[0] != int64(size) {
				return diffs, apierr.New(apierr.Internal, "model %s returned output %q with shape %v, expected batch size %d first", name, o.Name, o.Shape, size)
			}
			shape = shape[1:]
		}
		if rs := oc.GetReshape(); rs != nil {
			// The model returns the reshaped form; clients get dims.
			if !shapeMatches(shape, rs.GetShape()) {
				return diffs, apierr.New(apierr.Internal, "model %s returned output %q with shape %v, its config.pbtxt reshape declares %v", name, o.Name, o.Shape, rs.GetShape())
			}
			if dims := oc.GetDims(); !slices.Contains(dims, -1) {
				o.Shape = append(o.Shape[:len(o.Shape)-len(shape):len(o.Shape)-len(shape)], dims...)
			}
			continue
		}
		if !shapeMatches(shape, oc.GetDims()) {
			return diffs, apierr.New(apierr.Internal, "model %s returned output %q with shape %v, its config.pbtxt declares %s", name, o.Name, o.Shape, describeDims(oc.GetDims(), batching))
		}
	}
	return diffs, nil
}

// datatypeWarnings logs each passed-through datatype once per model,
// output, returned and declared datatype, not once per request: the one
// place that remembers which it has logged.
type datatypeWarnings struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[datatypeWarning]bool
}

type datatypeWarning struct {
	model string
	datatypeDiff
}

func newDatatypeWarnings(log *slog.Logger) *datatypeWarnings {
	return &datatypeWarnings{log: log, seen: map[datatypeWarning]bool{}}
}

// warn logs d for model (at version, the first one seen) unless it was
// logged before.
func (w *datatypeWarnings) warn(model, version string, d datatypeDiff) {
	k := datatypeWarning{model: model, datatypeDiff: d}
	w.mu.Lock()
	logged := w.seen[k]
	w.seen[k] = true
	w.mu.Unlock()
	if logged {
		return
	}
	w.log.Warn("output datatype differs from config.pbtxt; passing it through as returned",
		"model", model, "version", version, "output", d.output, "datatype", d.returned, "declared", d.declared)
}
