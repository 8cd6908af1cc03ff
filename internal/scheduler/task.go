package scheduler

import (
	"context"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
)

// NewTask returns a task for a source other than a Queue (the sequence
// batcher) to hand to an instance. size is the request's batch dimension.
// hook, when not nil, sees every result before it is delivered and may
// replace it; it runs once, on the goroutine that finishes the task (for a
// task given to an instance, before that instance takes its next batch).
func NewTask(ctx context.Context, req *inference.Request, size int, hook func(Result) Result) *Task {
	return &Task{Req: req, ctx: ctx, size: size, enqueued: time.Now(), done: make(chan Result, 1), hook: hook}
}

// Done delivers the task's result, once.
func (t *Task) Done() <-chan Result { return t.done }

// MarkStarted records when the task was handed to an instance (queue time
// ends, compute time begins, in the statistics).
func (t *Task) MarkStarted(at time.Time) { t.started = at }

// Enqueued is when the task was made.
func (t *Task) Enqueued() time.Time { return t.enqueued }

// Record adds a finished task to the statistics.
func (s *Stats) Record(t *Task, r Result) { s.record(t, r) }
