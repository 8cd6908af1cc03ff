package scheduler

import (
	"context"
	"errors"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

// ErrNoIdleInstance is returned by SubmitIdle when no instance is free.
var ErrNoIdleInstance = errors.New("no instance is free")

// SubmitIdle is Submit for a request that must not wait for an instance to
// become free: a BLS call whose target is already among its callers, which
// could otherwise wait for an instance held by the very call chain that
// waits for it. The request runs only if a routable worker is idle right
// now; otherwise SubmitIdle fails at once with an error wrapping
// ErrNoIdleInstance. A request without a deadline runs directly on the idle
// worker's instance (whatever the batching settings, which would otherwise
// hold it back); one with a deadline is queued and an idle worker is woken.
func (q *Queue) SubmitIdle(ctx context.Context, req *inference.Request, size int) (*inference.Response, error) {
	t := newTask(ctx, req, size, false)
	if err := q.admitIdle(t); err != nil {
		return nil, err
	}
	return q.wait(ctx, t)
}

// HasIdle reports whether a routable worker is idle now. A stream cannot be
// claimed the way SubmitIdle claims a worker, so a cyclic streamed call
// checks this first; between the check and its admission another request
// may take the worker, and the call then waits in the queue.
func (q *Queue) HasIdle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.routable > 0 && len(q.idle) > 0 && len(q.tasks) == 0
}

// admitIdle is admit for SubmitIdle.
func (q *Queue) admitIdle(t *Task) error {
	q.mu.Lock()
	if err := q.refusalLocked(); err != nil {
		q.mu.Unlock()
		return err
	}
	var w *waiter
	for k := len(q.idle) - 1; k >= 0 && len(q.tasks) == 0; k-- {
		if c := q.idle[k]; c.ctx.Err() == nil {
			w = c
			break
		}
	}
	if w == nil {
		q.mu.Unlock()
		return &apierr.Error{Code: apierr.Unavailable, Err: ErrNoIdleInstance,
			Msg: "model " + q.name + ": " + ErrNoIdleInstance.Error()}
	}
	if _, ok := t.ctx.Deadline(); ok || w.run == nil {
		// Queued so that the deadline can end the wait; an idle worker is
		// woken for it.
		q.tasks = append(q.tasks, t)
		q.dispatchLocked()
		q.mu.Unlock()
		return nil
	}
	q.unidleLocked(w)
	w.claimed = true
	q.mu.Unlock()
	q.runDirect(w, t)
	return nil
}
