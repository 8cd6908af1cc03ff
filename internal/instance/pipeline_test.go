package instance

import (
	"encoding/binary"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// outcome is what a submitted request ended with.
type outcome struct {
	resp *inference.Response
	err  error
}

func submitAsync(t *testing.T, q *scheduler.Queue, v float32) <-chan outcome {
	t.Helper()
	c := make(chan outcome, 1)
	go func() {
		resp, err := q.Submit(ctx(t), echoRequest(v), 1)
		c <- outcome{resp, err}
	}()
	return c
}

// waitUntil polls cond until it holds or the test's bound passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func await(t *testing.T, c <-chan outcome, what string) outcome {
	t.Helper()
	select {
	case o := <-c:
		return o
	case <-time.After(testTimeout):
		t.Fatalf("%s was never answered", what)
		return outcome{}
	}
}

// pipelined starts a slow-stub instance with policy p and queues two
// requests before it takes work: a, whose execute sleeps 30 s, and b,
// which answers at once. Once it takes work, a runs and b waits behind it
// on the stub: neither queued nor held.
func pipelined(t *testing.T, p health.Policy) (in *Instance, init health.Event, q *scheduler.Queue, a, b <-chan outcome) {
	t.Helper()
	ev := newSink()
	q = scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	in = newSlow(t, ev, q, p, "0")
	init, _ = started(t, in, ev)
	q.SetRoutable(1)
	a = submitAsync(t, q, 30)
	waitUntil(t, "a queued", func() bool { return q.Len() == 1 })
	b = submitAsync(t, q, 0)
	waitUntil(t, "b queued", func() bool { return q.Len() == 2 })
	in.SetRoutable(true)
	waitUntil(t, "b sent behind a", func() bool {
		held, _ := in.Held()
		return held == 1 && q.Len() == 0
	})
	return in, init, q, a, b
}

// requeuedThenServed checks that b went back to the queue unanswered,
// then is served by the instance's next process.
func requeuedThenServed(t *testing.T, in *Instance, q *scheduler.Queue, b <-chan outcome) {
	t.Helper()
	waitUntil(t, "b back in the queue", func() bool { return q.Len() == 1 })
	select {
	case o := <-b:
		t.Fatalf("b was answered instead of queued again: %+v", o)
	default:
	}
	in.Restart("test")
	o := await(t, b, "b")
	if o.err != nil {
		t.Fatalf("b = %v, want its response", o.err)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(o.resp.Outputs[0].Data)); got != 0 {
		t.Fatalf("b's output = %v, want 0", got)
	}
}

// A request sent behind a batch whose stub dies had not begun: it goes
// back to the queue, where the next process serves it, while the batch
// that was running is answered with the death.
func TestRequestBehindADeadStubIsQueuedAgain(t *testing.T) {
	in, init, q, a, b := pipelined(t, health.DefaultPolicy())
	if err := syscall.Kill(init.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if o := await(t, a, "a"); o.err == nil || !strings.Contains(o.err.Error(), "died while executing") {
		t.Fatalf("a = %+v, want its death", o)
	}
	requeuedThenServed(t, in, q, b)
}

// A request behind a batch that runs past execute_timeout_seconds is
// withdrawn from the stub, which still answers its control socket, and
// goes back to the queue at once, not when the process is restarted.
func TestRequestBehindATimedOutBatchIsWithdrawn(t *testing.T) {
	p := health.DefaultPolicy()
	p.ExecuteTimeout = 300 * time.Millisecond
	in, _, q, a, b := pipelined(t, p)
	if o := await(t, a, "a"); apierr.CodeOf(o.err) != apierr.DeadlineExceeded {
		t.Fatalf("a = %+v, want DeadlineExceeded", o)
	}
	requeuedThenServed(t, in, q, b)
}

// A request behind a batch on a stub stopped by a signal waits for the
// hang to be declared and the process ended, then goes back to the queue.
func TestRequestBehindAStoppedStubIsQueuedAgainAfterTheHang(t *testing.T) {
	in, init, q, a, b := pipelined(t, fastHeartbeat())
	if err := syscall.Kill(init.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(init.PID, syscall.SIGKILL)
	if o := await(t, a, "a"); apierr.CodeOf(o.err) != apierr.Unavailable || !strings.Contains(o.err.Error(), "stopped responding") {
		t.Fatalf("a = %+v, want 503 saying the instance stopped responding", o)
	}
	select {
	case o := <-b:
		t.Fatalf("b was answered by a stopped stub: %+v", o)
	default:
	}
	// The engine restarts a hung instance; here the test does.
	in.Restart("hang")
	waitUntil(t, "b back in the queue or served", func() bool { return q.Len() == 1 || len(b) == 1 })
	if o := await(t, b, "b"); o.err != nil {
		t.Fatalf("b = %v, want its response", o.err)
	}
}

// Requests queued for a busy instance are each answered with their own
// outputs while batches are sent behind one another.
func TestPipelinedRequestsAreAnsweredInFull(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	in := newSlow(t, ev, q, health.DefaultPolicy(), "0")
	started(t, in, ev)
	q.SetRoutable(1)
	const n = 40
	outs := make([]<-chan outcome, n)
	for k := range outs {
		// A thousandth of a second each: the stub is busy while the
		// next batch is sent.
		outs[k] = submitAsync(t, q, float32(k+1)/1e4)
	}
	waitUntil(t, "all queued", func() bool { return q.Len() == n })
	in.SetRoutable(true)
	for k, c := range outs {
		o := await(t, c, "a request")
		if o.err != nil {
			t.Fatalf("request %d: %v", k, o.err)
		}
		want := float32(k+1) / 1e4
		if got := math.Float32frombits(binary.LittleEndian.Uint32(o.resp.Outputs[0].Data)); got != want {
			t.Fatalf("request %d = %v, want %v", k, got, want)
		}
	}
	if held, _ := in.Held(); held != 0 {
		t.Fatalf("%d requests still held", held)
	}
}
