package ensemble

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Caller runs one request on a model, as a BLS call does: the model manager.
type Caller interface {
	Call(ctx context.Context, req *inference.Request) (*inference.Response, error)
}

// StepError is a step's failure; errors.As finds the step's own error.
type StepError struct {
	Ensemble string
	Index    int
	Model    string
	Err      error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("ensemble %s: step %d (model %s): %v", e.Ensemble, e.Index, e.Model, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

type stepResult struct {
	index int
	resp  *inference.Response
	err   error
}

// Run answers req by running the steps: each as soon as every ensemble
// tensor it reads exists, several at once when they are independent. The
// steps' requests carry req's id and parameters and req's chain of callers
// with the ensemble added. The first failing step cancels the others and
// its error, naming the step, is the result (with the step's error code).
// The response holds every ensemble output, in config order.
func (p *Plan) Run(ctx context.Context, c Caller, req *inference.Request) (*inference.Response, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tensors := make(map[string]tensor.Tensor, len(req.Inputs)+len(p.producer))
	for _, t := range req.Inputs {
		tensors[t.Name] = t
	}
	callers := append(slices.Clip(req.Callers), p.Name)
	results := make(chan stepResult, len(p.Steps))
	started := make([]bool, len(p.Steps))
	running, left := 0, len(p.Steps)
	var failure error
	for left > 0 {
		if failure == nil {
			for i, s := range p.Steps {
				if started[i] || !p.inputsReady(s, tensors) {
					continue
				}
				started[i] = true
				running++
				child := p.request(s, req, tensors, callers)
				go func() {
					resp, err := c.Call(ctx, child)
					results <- stepResult{index: i, resp: resp, err: err}
				}()
			}
		}
		if running == 0 {
			if failure != nil {
				return nil, failure
			}
			// FromConfig rules this out; a guard, not a path.
			return nil, apierr.New(apierr.Internal, "ensemble %s: %d steps can never run", p.Name, left)
		}
		r := <-results
		running--
		left--
		if failure != nil {
			continue
		}
		s := p.Steps[r.index]
		if r.err != nil {
			failure = stepFailure(p.Name, r.index, s.Model, r.err)
			cancel()
			continue
		}
		for _, o := range r.resp.Outputs {
			if t, ok := s.Outputs[o.Name]; ok {
				o.Name = t
				o.Parameters = nil
				tensors[t] = o
			}
		}
		for out, t := range s.Outputs {
			if _, ok := tensors[t]; !ok {
				failure = stepFailure(p.Name, r.index, s.Model,
					apierr.New(apierr.Internal, "model %s did not return output %q", s.Model, out))
				cancel()
				break
			}
		}
	}
	for running > 0 {
		<-results
		running--
	}
	if failure != nil {
		return nil, failure
	}
	resp := &inference.Response{Model: p.Name, ID: req.ID}
	for _, name := range p.Outputs {
		resp.Outputs = append(resp.Outputs, tensors[name])
	}
	return resp, nil
}

func (p *Plan) inputsReady(s Step, tensors map[string]tensor.Tensor) bool {
	for _, t := range s.Inputs {
		if _, ok := tensors[t]; !ok {
			return false
		}
	}
	return true
}

// request builds a step's request from the ensemble tensors.
func (p *Plan) request(s Step, req *inference.Request, tensors map[string]tensor.Tensor, callers []string) *inference.Request {
	// The ensemble request's correlation ID and flags go to every step, as
	// in Triton, so that a step with sequence_batching sees the sequence.
	child := &inference.Request{Model: s.Model, Version: s.Version, ID: req.ID, Parameters: req.Parameters, Callers: callers,
		Sequence: req.Sequence}
	for _, in := range sortedKeys(s.Inputs) {
		t := tensors[s.Inputs[in]]
		t.Name = in
		t.Parameters = nil
		child.Inputs = append(child.Inputs, t)
	}
	for _, out := range sortedKeys(s.Outputs) {
		child.Outputs = append(child.Outputs, inference.RequestedOutput{Name: out})
	}
	return child
}

// stepFailure wraps a step's error, keeping its class for the client.
func stepFailure(ensemble string, i int, model string, err error) error {
	se := &StepError{Ensemble: ensemble, Index: i, Model: model, Err: err}
	code := apierr.CodeOf(err)
	if errors.Is(err, context.Canceled) {
		return se
	}
	return &apierr.Error{Code: code, Msg: se.Error(), Err: se, RetryAfter: apierr.RetryAfter(err)}
}
