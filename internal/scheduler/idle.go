package scheduler

import (
	"context"
	"errors"
	"time"

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
// hold it back); one with a deadline is queued and that worker is woken.
func (q *Queue) SubmitIdle(ctx context.Context, req *inference.Request, size int) (*inference.Response, error) {
	q.mu.Lock()
	switch {
	case q.closed != nil:
		err := q.closed
		q.mu.Unlock()
		return nil, err
	case q.routable == 0:
		q.mu.Unlock()
		return nil, apierr.Unavailablef("model %s has no routable instance", q.name)
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
		return nil, &apierr.Error{Code: apierr.Unavailable, Err: ErrNoIdleInstance,
			Msg: "model " + q.name + ": " + ErrNoIdleInstance.Error()}
	}
	t := &Task{Req: req, ctx: ctx, size: size, enqueued: time.Now(), done: make(chan Result, 1)}
	if _, ok := ctx.Deadline(); ok || w.run == nil {
		// Queued so that the deadline can end the wait; the idle worker
		// is woken for it (it is the last idle one, or the first to look).
		q.tasks = append(q.tasks, t)
		q.dispatchLocked()
		q.mu.Unlock()
	} else {
		q.unidleLocked(w)
		w.claimed = true
		q.mu.Unlock()
		q.runDirect(w, t)
	}
	select {
	case r := <-t.done:
		q.stats.record(t, r)
		return r.Response, r.Err
	case <-ctx.Done():
		t.Finish(nil, ctx.Err())
		r := <-t.done
		q.stats.record(t, Result{Err: ctx.Err()})
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, apierr.Wrap(apierr.DeadlineExceeded, ctx.Err(), "model %s: request deadline exceeded", q.name)
		}
		return r.Response, ctx.Err()
	}
}
