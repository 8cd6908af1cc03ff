// Package scheduler holds each model version's request queue. Instances pull
// batches from it when, and only when, they are routable, so a request never
// waits on a dead or out-of-traffic instance: whichever live instance is free
// next takes it.
package scheduler

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

// Batching configures how a queue forms batches.
type Batching struct {
	// MaxBatchSize is the model's max_batch_size; 0 means the model does not
	// batch and every execute gets one request.
	MaxBatchSize int
	// Dynamic enables dynamic batching: a worker gathers queued requests up
	// to MaxBatchSize (counting batch dimensions), waiting at most MaxDelay
	// for more.
	Dynamic  bool
	MaxDelay time.Duration
	// MaxQueue bounds the number of waiting requests (0 = unbounded); more
	// are refused with 503 and Retry-After.
	MaxQueue int
}

// Result is what a task ends with.
type Result struct {
	Response *inference.Response
	Err      error
}

// Task is one request waiting for, or being served by, an instance.
type Task struct {
	Req      *inference.Request
	ctx      context.Context
	size     int // batch dimension, 1 for non-batching models
	enqueued time.Time
	started  time.Time
	done     chan Result // buffered 1: finishing never blocks
	once     sync.Once
}

// Finish delivers the task's result. Only the first call counts.
func (t *Task) Finish(resp *inference.Response, err error) {
	t.once.Do(func() { t.done <- Result{resp, err} })
}

// Queue is one model version's queue.
type Queue struct {
	name     string
	batching Batching
	stats    *Stats

	mu       sync.Mutex
	tasks    []*Task
	idle     int // workers waiting in Next for work
	routable int
	closed   error
	wake     chan struct{} // closed and replaced whenever tasks arrive
}

// NewQueue returns the queue of the model version called name (used in
// messages), recording statistics into stats.
func NewQueue(name string, b Batching, stats *Stats) *Queue {
	return &Queue{name: name, batching: b, stats: stats, wake: make(chan struct{})}
}

// SetRoutable tells the queue how many instances can take work. When it
// drops to zero, waiting requests fail at once with 503: nobody would serve
// them.
func (q *Queue) SetRoutable(n int) {
	q.mu.Lock()
	q.routable = n
	var failed []*Task
	if n == 0 && len(q.tasks) > 0 {
		failed, q.tasks = q.tasks, nil
	}
	q.mu.Unlock()
	for _, t := range failed {
		t.Finish(nil, apierr.Unavailablef("model %s has no routable instance", q.name))
	}
}

// Close fails every waiting request with err and refuses new ones.
func (q *Queue) Close(err error) {
	q.mu.Lock()
	q.closed = err
	failed := q.tasks
	q.tasks = nil
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
	for _, t := range failed {
		t.Finish(nil, err)
	}
}

// Submit queues req and waits for its result or for ctx to end. size is the
// request's batch dimension (1 for models that do not batch).
func (q *Queue) Submit(ctx context.Context, req *inference.Request, size int) (*inference.Response, error) {
	t := &Task{Req: req, ctx: ctx, size: size, enqueued: time.Now(), done: make(chan Result, 1)}
	q.mu.Lock()
	switch {
	case q.closed != nil:
		err := q.closed
		q.mu.Unlock()
		return nil, err
	case q.routable == 0:
		q.mu.Unlock()
		return nil, apierr.Unavailablef("model %s has no routable instance", q.name)
	case q.batching.MaxQueue > 0 && len(q.tasks) >= q.batching.MaxQueue:
		q.mu.Unlock()
		return nil, &apierr.Error{Code: apierr.ResourceExhausted, RetryAfter: time.Second,
			Msg: "model " + q.name + " has too many queued requests"}
	}
	q.tasks = append(q.tasks, t)
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()

	select {
	case r := <-t.done:
		q.stats.record(t, r)
		return r.Response, r.Err
	case <-ctx.Done():
		// The task may still be running; its result is dropped.
		t.Finish(nil, ctx.Err())
		r := <-t.done
		q.stats.record(t, Result{Err: ctx.Err()})
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, apierr.Wrap(apierr.DeadlineExceeded, ctx.Err(), "model %s: request deadline exceeded", q.name)
		}
		return r.Response, ctx.Err()
	}
}

// Next blocks until it can hand out a batch or ctx ends. Tasks whose client
// has gone are dropped on the way. A worker counts as idle from the moment
// it finds nothing to do until it takes a batch.
func (q *Queue) Next(ctx context.Context) ([]*Task, error) {
	idle := false
	q.mu.Lock()
	defer func() {
		if idle {
			q.idle--
		}
		q.mu.Unlock()
	}()
	for {
		if q.closed != nil {
			return nil, q.closed
		}
		q.dropCancelledLocked()
		if len(q.tasks) > 0 {
			if idle {
				q.idle--
				idle = false
			}
			batch := q.takeLocked()
			if q.batching.Dynamic && q.batching.MaxDelay > 0 && batchSize(batch) < q.batching.MaxBatchSize {
				q.mu.Unlock()
				batch = q.fill(ctx, batch)
				q.mu.Lock()
			}
			now := time.Now()
			for _, t := range batch {
				t.started = now
			}
			return batch, nil
		}
		if !idle {
			q.idle++
			idle = true
		}
		wake := q.wake
		q.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-wake:
		}
		q.mu.Lock()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// fill waits up to MaxDelay for more requests to join batch. It does not
// wait while another worker is idle: that worker would serve the next
// request at once, so holding this batch back only adds latency.
func (q *Queue) fill(ctx context.Context, batch []*Task) []*Task {
	deadline := time.NewTimer(q.batching.MaxDelay)
	defer deadline.Stop()
	for batchSize(batch) < q.batching.MaxBatchSize {
		q.mu.Lock()
		if len(q.tasks) > 0 && q.fitsLocked(batch) {
			batch = append(batch, q.takeMoreLocked(batch)...)
			q.mu.Unlock()
			continue
		}
		if q.idle > 0 {
			q.mu.Unlock()
			return batch
		}
		wake := q.wake
		q.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

func (q *Queue) dropCancelledLocked() {
	kept := q.tasks[:0]
	for _, t := range q.tasks {
		if t.ctx.Err() != nil {
			t.Finish(nil, t.ctx.Err())
			continue
		}
		kept = append(kept, t)
	}
	for i := len(kept); i < len(q.tasks); i++ {
		q.tasks[i] = nil
	}
	q.tasks = kept
}

// takeLocked removes the first batch from the queue.
func (q *Queue) takeLocked() []*Task {
	if !q.batching.Dynamic {
		t := q.tasks[0]
		q.tasks = q.tasks[1:]
		return []*Task{t}
	}
	return q.takeMoreLocked(nil)
}

func (q *Queue) fitsLocked(batch []*Task) bool {
	return batchSize(batch)+q.tasks[0].size <= q.batching.MaxBatchSize
}

// takeMoreLocked moves queued tasks into batch while they fit; the first
// task always goes, whatever its size.
func (q *Queue) takeMoreLocked(batch []*Task) []*Task {
	var out []*Task
	size := batchSize(batch)
	for len(q.tasks) > 0 {
		t := q.tasks[0]
		if (len(batch) > 0 || len(out) > 0) && size+t.size > q.batching.MaxBatchSize {
			break
		}
		out = append(out, t)
		size += t.size
		q.tasks = q.tasks[1:]
	}
	return out
}

func batchSize(batch []*Task) int {
	n := 0
	for _, t := range batch {
		n += t.size
	}
	return n
}

// Routable is the number of instances that can take work.
func (q *Queue) Routable() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.routable
}

// Len is the number of waiting requests.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tasks)
}
