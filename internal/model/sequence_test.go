package model

import (
	"context"
	"errors"
	"testing"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// sequenceRepo writes a repository with one sequence batching model m.
func sequenceRepo(t *testing.T) string {
	t.Helper()
	return oneModelRepo(t, `name: "m"
backend: "python"
max_batch_size: 0
sequence_batching { }
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
`, "")
}

// A BLS call (or an ensemble step) to a sequence batching model goes
// through its sequence batcher, which applies Triton's rules to the
// caller's correlation ID; a call back into it from its own chain is
// refused, naming the chain, rather than left to wait for itself.
func TestCallsToASequenceModel(t *testing.T) {
	m, eng, _ := fakeManager(t, sequenceRepo(t))
	if err := m.Load(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	waitModel(t, eng, "ready", func(mh *health.ModelHealth) bool { return mh.Ready })
	ctx, cancel := context.WithTimeout(context.Background(), fakeWait)
	defer cancel()
	in := tensor.Tensor{Name: "INPUT0", Datatype: tensor.Int32, Shape: []int64{1}, Data: make([]byte, 4)}

	_, err := m.Call(ctx, &inference.Request{Model: "m", Inputs: []tensor.Tensor{in}, Callers: []string{"caller"}})
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != apierr.InvalidArgument ||
		ae.Msg != "inference request to model 'm' must specify a non-zero or non-empty correlation ID" {
		t.Fatalf("call without a correlation ID: %v, want the sequence batcher's INVALID_ARGUMENT", err)
	}

	seq := inference.Sequence{ID: inference.NumericID(7), Start: true}
	_, err = m.Call(ctx, &inference.Request{Model: "m", Inputs: []tensor.Tensor{in}, Sequence: seq, Callers: []string{"m"}})
	want := "BLS call cycle m → m: model m uses sequence batching, and a call back into it could wait for its own sequence"
	if !errors.As(err, &ae) || ae.Code != apierr.Unavailable || ae.Msg != want {
		t.Fatalf("cyclic call: %v, want UNAVAILABLE %q", err, want)
	}
	err = m.CallStream(ctx, &inference.Request{Model: "m", Inputs: []tensor.Tensor{in}, Sequence: seq, Callers: []string{"m"}},
		func(*inference.Response, error, bool) error { return nil })
	if !errors.As(err, &ae) || ae.Msg != want {
		t.Fatalf("cyclic streamed call: %v, want %q", err, want)
	}
}
