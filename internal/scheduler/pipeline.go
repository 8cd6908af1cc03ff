package scheduler

import "time"

// An instance that has a batch in flight may send the next one behind it
// (pipelining): the stub reads its socket in order, so the next batch is
// there the moment the current one is answered, and a busy stub never
// sleeps between batches. Only queued work goes that way, and only while
// no worker is idle: an idle instance serves a request at once, where a
// pipelined one waits for the batch ahead of it.

// TakeQueued hands out the next batch without waiting: nil when nothing
// is queued, a worker is idle, the queue gathers dynamic batches (a batch
// taken early would be smaller), the queue is closed, or accept refuses
// the first task. The batch counts as started.
func (q *Queue) TakeQueued(accept func(*Task) bool) []*Task {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.batching.Dynamic || q.closed != nil || len(q.idle) > 0 {
		return nil
	}
	q.dropCancelledLocked()
	if len(q.tasks) == 0 || !accept(q.tasks[0]) {
		return nil
	}
	batch := q.takeLocked()
	now := time.Now()
	for _, t := range batch {
		t.started = now
	}
	return batch
}

// Requeue puts back, at the head of the queue in their order, tasks that
// TakeQueued handed out and no instance began: their stub ended before it
// reached them. They wait as if never taken; with no instance left to
// serve them they fail as queued requests do (SetRoutable).
func (q *Queue) Requeue(batch []*Task) {
	q.mu.Lock()
	var failed error
	switch {
	case q.closed != nil:
		failed = q.closed
	case q.routable == 0:
		failed = noRoutable(q.name)
	default:
		for _, t := range batch {
			t.started = time.Time{}
			t.SetCancel(nil)
		}
		q.tasks = append(append(make([]*Task, 0, len(batch)+len(q.tasks)), batch...), q.tasks...)
		q.dispatchLocked()
	}
	q.mu.Unlock()
	if failed != nil {
		for _, t := range batch {
			t.Finish(nil, failed)
		}
	}
}
