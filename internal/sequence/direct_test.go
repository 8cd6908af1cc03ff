package sequence

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// directWorker is a worker whose Next takes a run, as the instance's does:
// the batches the batcher hands out through Next and those it runs on the
// submitter through run are recorded apart. A run waits for a token from
// gate when gate is set.
type directWorker struct {
	in     *Instance
	exec   func(*inference.Request) *inference.Response
	gate   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu             sync.Mutex
	handed, direct []string // request IDs
	running        bool     // a direct run is in progress
}

func startDirectWorker(t *testing.T, in *Instance, gate chan struct{}) *directWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &directWorker{in: in, exec: simpleSequence, gate: gate, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			batch, err := in.Next(ctx, w.run)
			if err != nil {
				return
			}
			w.mu.Lock()
			if w.running {
				t.Errorf("Next handed out %d requests during a direct run", len(batch))
			}
			for _, task := range batch {
				w.handed = append(w.handed, task.Req.ID)
			}
			w.mu.Unlock()
			for _, task := range batch {
				task.Finish(w.exec(task.Req), nil)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	eventually(t, "the worker to be idle", func() bool {
		in.b.mu.Lock()
		defer in.b.mu.Unlock()
		return in.idleRun != nil
	})
	return w
}

func (w *directWorker) run(batch []*scheduler.Task) {
	w.mu.Lock()
	w.running = true
	for _, task := range batch {
		w.direct = append(w.direct, task.Req.ID)
	}
	w.mu.Unlock()
	if w.gate != nil {
		<-w.gate
	}
	w.mu.Lock()
	w.running = false
	w.mu.Unlock()
	for _, task := range batch {
		task.Finish(w.exec(task.Req), nil)
	}
}

func (w *directWorker) ids() (handed, direct []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.handed...), append([]string(nil), w.direct...)
}

// A sequence whose instance is idle runs each request on the submitting
// goroutine, in order, with its control tensors: the worker hands out
// nothing.
func TestIdleInstanceRunsTheRequestOnItsSubmitter(t *testing.T) {
	b := newBatcher(t, testConfig(), "seq_0")
	w := startDirectWorker(t, b.Instance(0), nil)
	ctx := context.Background()
	id := inference.NumericID(42)
	for k, v := range []int32{5, 6, 7} {
		start, end := k == 0, k == 2
		want := v + map[bool]int32{true: 1}[start]
		if end {
			want += 42 // END × CORRID
		}
		resp, err := b.Submit(ctx, request(id, start, end, v), 1)
		if got := output(t, resp, err); got != want {
			t.Fatalf("request %d: got %d, want %d", k, got, want)
		}
	}
	handed, direct := w.ids()
	if len(handed) != 0 || len(direct) != 3 {
		t.Fatalf("worker took %v, direct runs %v; want every request run directly", handed, direct)
	}
	if open := b.Open(); open != 0 {
		t.Errorf("%d sequences open after END", open)
	}
}

// While a request runs on its submitter, the instance takes nothing else:
// a request of another sequence that arrives meanwhile goes to the worker
// once the run is over, and a request with a deadline is never run
// directly.
func TestRequestsWaitForADirectRun(t *testing.T) {
	b := newBatcher(t, testConfig(), "seq_0")
	gate := make(chan struct{})
	w := startDirectWorker(t, b.Instance(0), gate)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, request(inference.NumericID(1), true, true, 1), 1)
		first <- err
	}()
	eventually(t, "the first request to run directly", func() bool {
		_, direct := w.ids()
		return len(direct) == 1
	})
	second := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, request(inference.NumericID(2), true, true, 2), 1)
		second <- err
	}()
	eventually(t, "the second request to wait", func() bool { return b.Len() == 1 })
	select {
	case err := <-second:
		t.Fatalf("the second request ended (%v) while the direct run held the instance", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(gate) // every later direct run goes at once
	for _, ch := range []chan error{first, second} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := b.Submit(dctx, request(inference.NumericID(3), true, true, 3), 1); err != nil {
		t.Fatal(err)
	}
	handed, direct := w.ids()
	if len(direct) != 1 || len(handed) != 2 {
		t.Fatalf("worker took %v, direct runs %v; want the first direct, the other two through the worker", handed, direct)
	}
}
