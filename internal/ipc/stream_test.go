package ipc_test

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
)

// event is one Sink call.
type event struct {
	index int
	res   ipc.Result
	final bool
}

// collector is a Sink that records every call and signals each.
type collector struct {
	mu     sync.Mutex
	events []event
	notify chan struct{}
}

func newCollector() *collector { return &collector{notify: make(chan struct{}, 1)} }

func (c *collector) Response(index int, r ipc.Result, final bool) {
	c.mu.Lock()
	c.events = append(c.events, event{index, r, final})
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// waitFinals waits until n final calls arrived and returns every event.
func (c *collector) waitFinals(t *testing.T, n int) []event {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		c.mu.Lock()
		finals := 0
		for _, e := range c.events {
			if e.final {
				finals++
			}
		}
		evs := append([]event(nil), c.events...)
		c.mu.Unlock()
		if finals >= n {
			return evs
		}
		select {
		case <-c.notify:
		case <-deadline:
			t.Fatalf("%d of %d final responses after %s; events %+v", finals, n, testTimeout, evs)
		}
	}
}

func (s *stub) initDecoupled(t *testing.T, name string, decoupled bool) {
	t.Helper()
	a := s.initArgs(name)
	if decoupled {
		a.ModelConfigJSON = `{"name":"` + name + `","backend":"python","model_transaction_policy":{"decoupled":true}}`
	}
	if _, err := s.Init(ctxT(t), a); err != nil {
		t.Fatalf("init %s: %v", name, err)
	}
}

func int32s(name string, vals ...int32) tensor.Tensor {
	data := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], uint32(v))
	}
	return tensor.Tensor{Name: name, Datatype: tensor.Int32, Shape: []int64{int64(len(vals))}, Data: data}
}

func modeReq(id, mode string, n int32) *inference.Request {
	return &inference.Request{Model: "stream", ID: id, Parameters: map[string]any{"mode": mode}, Inputs: []tensor.Tensor{int32s("N", n)}}
}

// outs returns the OUT value of each non-final-only event of request index.
func outs(t *testing.T, evs []event, index int) []float32 {
	t.Helper()
	var got []float32
	for _, e := range evs {
		if e.index != index || e.res.Response == nil {
			continue
		}
		got = append(got, floats(t, e.res.Response.Outputs[0])...)
	}
	return got
}

func TestDecoupledStreamsFromThreadsAndInsideExecute(t *testing.T) {
	s := startStub(t, "stream", stubOptions{})
	s.initDecoupled(t, "stream", true)
	c := newCollector()
	reqs := []*inference.Request{modeReq("a", "thread", 3), modeReq("b", "sync", 2), modeReq("c", "thread", 0), modeReq("d", "final_with_last", 2)}
	b, err := s.NewBatch(reqs, c)
	if err != nil {
		t.Fatal(err)
	}
	results, err := b.Execute(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if !r.Streamed {
			t.Errorf("result %d = %+v, want Streamed", i, r)
		}
	}
	evs := c.waitFinals(t, 4)
	for idx, want := range [][]float32{{0, 1, 2}, {0, 1}, nil, {0, 1}} {
		if got := outs(t, evs, idx); !equalFloats(got, want) {
			t.Errorf("request %d: OUT values %v, want %v", idx, got, want)
		}
	}
	for _, e := range evs {
		if e.res.Err != nil {
			t.Errorf("request %d: unexpected error %v", e.index, e.res.Err)
		}
		if e.final && e.index != 3 && e.res.Response != nil {
			t.Errorf("request %d: final call carries a response, want a flag-only FINAL", e.index)
		}
		if e.final && e.index == 3 && e.res.Response == nil {
			t.Errorf("request 3: FINAL was sent with the last response, got a flag-only final")
		}
	}
	if d := s.DroppedResponses(); d != 0 {
		t.Errorf("DroppedResponses = %d, want 0", d)
	}
}

func equalFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDecoupledExecuteMustReturnNone(t *testing.T) {
	s := startStub(t, "stream", stubOptions{})
	s.initDecoupled(t, "stream", true)
	for mode, want := range map[string]string{
		"return": "Python model 'stream_0' is using the decoupled mode and the execute function must return None.",
		"raise":  "execute raised ValueError: intentional error",
	} {
		b, err := s.NewBatch([]*inference.Request{modeReq("x", mode, 1)}, newCollector())
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Execute(ctxT(t))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mode %s: err = %v, want it to contain %q", mode, err, want)
		}
	}
	// The stub serves on.
	c := newCollector()
	b, _ := s.NewBatch([]*inference.Request{modeReq("y", "thread", 1)}, c)
	if _, err := b.Execute(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := outs(t, c.waitFinals(t, 1), 0); !equalFloats(got, []float32{0}) {
		t.Errorf("after the errors: OUT %v, want [0]", got)
	}
}

func TestSenderChecksAsTriton(t *testing.T) {
	s := startStub(t, "stream", stubOptions{})
	s.initDecoupled(t, "stream", true)
	c := newCollector()
	b, _ := s.NewBatch([]*inference.Request{modeReq("x", "bad_flags", 0), modeReq("y", "after_final", 0)}, c)
	if _, err := b.Execute(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	evs := c.waitFinals(t, 2)
	var msgs string
	for _, e := range evs {
		if e.index == 0 && e.res.Response != nil {
			msgs, _ = e.res.Response.Parameters["msgs"].(string)
		}
	}
	for _, want := range []string{
		"Unable to send response. Unsupported flag provided.",
		"Inference Response object must be provided when the response flags is set to zero.",
		"Unable to send response. Expected an InferenceResponse, got str.",
	} {
		if !strings.Contains(msgs, want) {
			t.Errorf("sender errors %q lack %q", msgs, want)
		}
	}
	waitOutput(t, s, "after final: Unable to send response. Response sender has been closed.")
}

// waitOutput waits until the stub has printed want.
func waitOutput(t *testing.T, s *stub, want string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(s.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the stub never printed %q; output:\n%s", want, s.out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCancelReachesTheModel(t *testing.T) {
	s := startStub(t, "stream", stubOptions{})
	s.initDecoupled(t, "stream", true)
	c := newCollector()
	b, _ := s.NewBatch([]*inference.Request{modeReq("x", "until_cancelled", 0)}, c)
	if _, err := b.Execute(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Wait for the stream to flow, then cancel.
	deadline := time.After(testTimeout)
	for {
		c.mu.Lock()
		n := len(c.events)
		c.mu.Unlock()
		if n >= 3 {
			break
		}
		select {
		case <-c.notify:
		case <-deadline:
			t.Fatal("no responses")
		}
	}
	if err := b.Cancel(0); err != nil {
		t.Fatal(err)
	}
	evs := c.waitFinals(t, 1)
	last := evs[len(evs)-1]
	var me *ipc.ModelError
	if !last.final || last.res.Err == nil || !asModelError(last.res.Err, &me) || me.Code != "CANCELLED" {
		t.Fatalf("last event %+v, want a final CANCELLED error", last)
	}
}

func asModelError(err error, me **ipc.ModelError) bool {
	e, ok := err.(*ipc.ModelError)
	if ok {
		*me = e
	}
	return ok
}

func TestAsyncDecoupledRunsRequestsConcurrently(t *testing.T) {
	s := startStub(t, "async_stream", stubOptions{})
	s.initDecoupled(t, "async_stream", true)
	c := newCollector()
	start := time.Now()
	// Four batches of one request each, as a non-batching model gets them:
	// each execute returns at once and the coroutines overlap.
	for i := range 4 {
		b, err := s.NewBatch([]*inference.Request{{ID: string(rune('a' + i)), Inputs: []tensor.Tensor{int32s("DELAY_MS", 500)}}}, &indexed{c, i})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitFinals(t, 4)
	if took := time.Since(start); took > 1800*time.Millisecond {
		t.Errorf("4 requests that each wait 0.5 s took %s, want them to overlap (~0.5 s)", took)
	}
	// A coroutine that raises ends its request with the error.
	b, _ := s.NewBatch([]*inference.Request{{ID: "bad", Inputs: []tensor.Tensor{int32s("DELAY_MS", -1)}}}, c)
	if _, err := b.Execute(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	evs := c.waitFinals(t, 5)
	last := evs[len(evs)-1]
	if last.res.Err == nil || !strings.Contains(last.res.Err.Error(), "RuntimeError: negative delay") {
		t.Errorf("raising coroutine: last event %+v, want its error", last)
	}
}

// indexed relabels a one-request batch's calls with a request number.
type indexed struct {
	c *collector
	i int
}

func (x *indexed) Response(_ int, r ipc.Result, final bool) { x.c.Response(x.i, r, final) }

func TestDefaultModeSender(t *testing.T) {
	s := startStub(t, "sender_default", stubOptions{})
	s.initDecoupled(t, "sender_default", false)
	c := newCollector()
	modes := []string{"return", "inside", "thread", "final_first", "two"}
	reqs := make([]*inference.Request, len(modes))
	for i, m := range modes {
		reqs[i] = &inference.Request{ID: m, Parameters: map[string]any{"mode": m}}
	}
	b, _ := s.NewBatch(reqs, c)
	results, err := b.Execute(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Response == nil || floats(t, results[0].Response.Outputs[0])[0] != 1 {
		t.Errorf("return: %+v, want OUT 1 in the reply", results[0])
	}
	if results[3].Err == nil || !strings.Contains(results[3].Err.Error(), "Non-decoupled model cannot send complete final before sending a response") {
		t.Errorf("final_first: %+v, want Triton's error", results[3])
	}
	for _, i := range []int{1, 2, 4} {
		if !results[i].Streamed {
			t.Errorf("%s: %+v, want Streamed", modes[i], results[i])
		}
	}
	evs := c.waitFinals(t, 3)
	for i, want := range map[int]float32{1: 2, 2: 3, 4: 4} {
		if got := outs(t, evs, i); !equalFloats(got, []float32{want}) {
			t.Errorf("%s: OUT %v, want [%v]", modes[i], got, want)
		}
	}
	waitOutput(t, s, "second send: Unable to send response. Non-decoupled model cannot send more than one response.")

	// None without taking the sender is an error, not a hang.
	b, _ = s.NewBatch([]*inference.Request{{ID: "n", Parameters: map[string]any{"mode": "none"}}}, c)
	if _, err := b.Execute(ctxT(t)); err == nil || !strings.Contains(err.Error(), "did not take its response sender") {
		t.Errorf("none: err = %v", err)
	}
	// Plain Execute cannot take sender responses and says so.
	res, err := s.Execute(ctxT(t), []*inference.Request{{ID: "i", Parameters: map[string]any{"mode": "inside"}}})
	if err != nil || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "response sender") {
		t.Errorf("Execute with a sender response: %+v, %v", res, err)
	}
}

func TestStubDeathEndsOpenRequests(t *testing.T) {
	s := startStub(t, "stream", stubOptions{})
	s.initDecoupled(t, "stream", true)
	c := newCollector()
	b, _ := s.NewBatch([]*inference.Request{modeReq("x", "until_cancelled", 0), modeReq("y", "until_cancelled", 0)}, c)
	if _, err := b.Execute(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	<-c.notify
	_ = s.cmd.Process.Kill()
	evs := c.waitFinals(t, 2)
	for _, e := range evs {
		if e.final && !isClosed(e.res.Err) {
			t.Errorf("request %d ended with %v, want ErrClosed", e.index, e.res.Err)
		}
	}
	_ = context.Background
}

func isClosed(err error) bool {
	return err != nil && strings.Contains(err.Error(), ipc.ErrClosed.Error())
}
