package scheduler

import (
	"testing"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

func acceptAll(*Task) bool { return true }

// TakeQueued hands out the head of the queue without waiting, and nothing
// while a worker is idle (it serves the request at once), when the head
// is refused, or when the queue gathers dynamic batches.
func TestTakeQueuedTakesTheHeadOnlyWhenNoWorkerIsIdle(t *testing.T) {
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(2)
	if b := q.TakeQueued(acceptAll); b != nil {
		t.Fatalf("an empty queue handed out %v", b)
	}
	first := submit(testCtx(t), q, "first", 1)
	waitLen(t, q, 1)
	submit(testCtx(t), q, "second", 1)
	waitLen(t, q, 2)
	if b := q.TakeQueued(func(*Task) bool { return false }); b != nil {
		t.Fatalf("a refused head was handed out: %v", b)
	}
	b := q.TakeQueued(acceptAll)
	if len(b) != 1 || b[0].Req.ID != "first" || !q.started(b[0]) {
		t.Fatalf("TakeQueued = %v, want the started head", b)
	}
	b[0].Finish(&inference.Response{ID: "first"}, nil)
	if o := <-first; o.err != nil || o.resp.ID != "first" {
		t.Fatalf("first = %+v", o)
	}

	// With a worker idle the queued request is left for it: Next takes
	// it, as the worker was woken for it.
	q.mu.Lock()
	q.idle = append(q.idle, &waiter{idle: true, wake: make(chan struct{}, 1)})
	q.mu.Unlock()
	if b := q.TakeQueued(acceptAll); b != nil {
		t.Fatalf("TakeQueued took work an idle worker would serve: %v", b)
	}

	d := NewQueue("d", Batching{Dynamic: true, MaxBatchSize: 4}, &Stats{})
	d.SetRoutable(1)
	submit(testCtx(t), d, "x", 1)
	waitLen(t, d, 1)
	if b := d.TakeQueued(acceptAll); b != nil {
		t.Fatalf("a dynamic-batching queue handed out %v early", b)
	}
}

// Requeue puts tasks back at the head, in their order, as not started;
// with no instance left they fail as queued requests do.
func TestRequeuePutsTasksBackAtTheHead(t *testing.T) {
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	a := submit(testCtx(t), q, "a", 1)
	waitLen(t, q, 1)
	b := submit(testCtx(t), q, "b", 1)
	waitLen(t, q, 2)
	taken := q.TakeQueued(acceptAll)
	called := false
	taken[0].SetCancel(func() { called = true })
	q.Requeue(taken)
	if q.started(taken[0]) {
		t.Fatal("a requeued task still counts as started")
	}
	batches := idleWorkerNoWait(t, q)
	got := <-batches
	if got[0].Req.ID != "a" {
		t.Fatalf("after Requeue the head is %q, want a", got[0].Req.ID)
	}
	got[0].Finish(nil, apierr.New(apierr.Internal, "done"))
	<-a
	if called {
		t.Fatal("the cancel of the withdrawn batch ran for the task's end")
	}

	taken = q.TakeQueued(acceptAll)
	if len(taken) != 1 || taken[0].Req.ID != "b" {
		t.Fatalf("TakeQueued = %v, want b", taken)
	}
	q.SetRoutable(0)
	q.Requeue(taken)
	if o := <-b; apierr.CodeOf(o.err) != apierr.Unavailable {
		t.Fatalf("b requeued with no routable instance = %+v, want 503", o)
	}
}

// idleWorkerNoWait runs Next once and passes on its batch.
func idleWorkerNoWait(t *testing.T, q *Queue) <-chan []*Task {
	t.Helper()
	batches := make(chan []*Task, 1)
	go func() {
		b, err := q.Next(testCtx(t), nil)
		if err == nil {
			batches <- b
		}
	}()
	return batches
}
