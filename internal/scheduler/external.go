package scheduler

import (
	"context"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
)

// NewTask returns a one-response task for a source other than a Queue (the
// sequence batcher) to hand to an instance. size is the request's batch
// dimension. onEnd, when not nil, sees the result when the task ends and may
// replace it; it runs once, on the goroutine that ends the task, and the
// result is not given out before it has returned.
func NewTask(ctx context.Context, req *inference.Request, size int, onEnd func(Result) Result) *Task {
	t := newTask(ctx, req, size, false)
	if onEnd != nil {
		t.onEnd = onEnd
		t.hooked = make(chan struct{})
	}
	return t
}

// runEnd runs the onEnd hook of a task that has just ended.
func (t *Task) runEnd() {
	if t.onEnd == nil {
		return
	}
	t.mu.Lock()
	r := t.final
	t.mu.Unlock()
	r = t.onEnd(r)
	t.mu.Lock()
	t.final = r
	t.mu.Unlock()
	close(t.hooked)
}

// Await waits until the task has ended and returns its result; ok is
// false when ctx ended first (the task goes on).
func (t *Task) Await(ctx context.Context) (r Result, ok bool) {
	for !t.ended() {
		select {
		case <-t.wake:
		case <-ctx.Done():
			return Result{}, false
		}
	}
	return t.result(), true
}

// Result is the result of a task that has ended.
func (t *Task) Result() Result { return t.result() }

// MarkStarted records when the task was handed to an instance (queue time
// ends, compute time begins, in the statistics).
func (t *Task) MarkStarted(at time.Time) { t.started = at }

// Enqueued is when the task was made.
func (t *Task) Enqueued() time.Time { return t.enqueued }

// Record adds a finished task to the statistics.
func (s *Stats) Record(t *Task, r Result) { s.record(t, r) }
