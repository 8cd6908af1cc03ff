package ipc_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
)

// fakeLogMetric records LOG frames and keeps one counter per metric id.
type fakeLogMetric struct {
	mu     sync.Mutex
	logs   []ipc.LogRecord
	calls  []ipc.MetricCall
	values map[uint64]float64
}

func (f *fakeLogMetric) Log(rec ipc.LogRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, rec)
}

func (f *fakeLogMetric) Metric(c ipc.MetricCall) (ipc.MetricReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	switch c.Op {
	case "family_new":
		return ipc.MetricReply{ID: 1}, nil
	case "metric_new":
		return ipc.MetricReply{ID: 2}, nil
	case "increment":
		if c.Value < 0 {
			return ipc.MetricReply{}, errors.New("no negative increments")
		}
		f.values[c.ID] += c.Value
		return ipc.MetricReply{}, nil
	case "value":
		return ipc.MetricReply{Value: f.values[c.ID]}, nil
	}
	return ipc.MetricReply{}, nil
}

func TestStubCalls(t *testing.T) {
	t.Parallel()
	calls := &fakeLogMetric{values: map[uint64]float64{}}
	s := startStub(t, "server_calls", stubOptions{calls: calls})
	if _, err := s.Init(ctxT(t), s.initArgs("server_calls")); err != nil {
		t.Fatal(err)
	}
	run := func(v float32) ipc.Result {
		t.Helper()
		res, err := s.Execute(ctxT(t), []*inference.Request{{Model: "server_calls", Version: "1", Inputs: []tensor.Tensor{fp32("INPUT0", v)}}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	if r := run(2); r.Err != nil || floats(t, output(t, r.Response, "OUTPUT0"))[0] != 2 {
		t.Fatalf("first execute = %+v, want value 2", r)
	}
	if r := run(3); r.Err != nil || floats(t, output(t, r.Response, "OUTPUT0"))[0] != 5 {
		t.Fatalf("second execute = %+v, want value 5", r)
	}
	r := run(-1)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "Failed to increment metric value: TRITONSERVER_METRIC_KIND_COUNTER can only be incremented") {
		t.Fatalf("negative increment: err = %v, want Triton's refusal", r.Err)
	}

	// LOG frames travel on the control connection, the execute's reply on
	// the data connection: the last record may arrive after the reply.
	deadline := time.Now().Add(testTimeout)
	for {
		calls.mu.Lock()
		n := len(calls.logs)
		calls.mu.Unlock()
		if n >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	calls.mu.Lock()
	defer calls.mu.Unlock()
	if len(calls.logs) != 4 {
		t.Fatalf("log records = %+v, want 1 from initialize and 3 from execute", calls.logs)
	}
	first := calls.logs[0]
	if first.Level != "WARNING" || first.Message != "initializing server_calls" ||
		!strings.HasSuffix(first.File, "server_calls/1/model.py") || first.Line != 11 {
		t.Errorf("first record = %+v, want WARNING from model.py line 11", first)
	}
	if got := calls.logs[1]; got.Level != "VERBOSE" || got.Message != "adding 2 for server_calls" {
		t.Errorf("execute record = %+v, want VERBOSE naming the model", got)
	}
	if c := calls.calls[0]; c.Op != "family_new" || c.Name != "calls_total" || c.Kind != "COUNTER" || c.Description != "calls seen" {
		t.Errorf("first metric call = %+v", c)
	}
	if c := calls.calls[1]; c.Op != "metric_new" || c.Family != 1 || c.Labels["model"] != "server_calls" {
		t.Errorf("second metric call = %+v", c)
	}
	if c := calls.calls[2]; c.Op != "increment" || !c.Async || c.Value != 2 {
		t.Errorf("third metric call = %+v, want an async increment by 2", c)
	}
}

// TestStubCallsWithoutHandler: a client without StubCalls refuses metric
// operations with a message the model sees, and the stub keeps serving.
func TestStubCallsWithoutHandler(t *testing.T) {
	t.Parallel()
	s := startStub(t, "server_calls", stubOptions{})
	_, err := s.Init(ctxT(t), s.initArgs("server_calls"))
	if err == nil || !strings.Contains(err.Error(), "Error when creating MetricFamily: custom metrics are not available") {
		t.Fatalf("init error = %v, want the metric refusal", err)
	}
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}
