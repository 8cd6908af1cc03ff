// Package scheduler holds each model version's request queue. Instances pull
// batches from it when, and only when, they are routable, so a request never
// waits on a dead or out-of-traffic instance: whichever live instance is free
// next takes it.
package scheduler

import (
	"context"
	"errors"
	"fmt"
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
	// Preferred are the preferred batch sizes (see preferred.go).
	Preferred []int
	// MaxQueue bounds the number of waiting requests (0 = unbounded); more
	// are refused with 503 and Retry-After.
	MaxQueue int
}

// Queue is one model version's queue.
//
// A request reaches an instance in one of two ways. When a worker is idle
// and nothing is queued, Submit claims that worker and runs the request on
// its instance from the submitting goroutine: the worker goroutine stays
// parked, and the request costs no goroutine hand-offs. Otherwise the
// request is queued and exactly one idle worker, if any, is woken to take
// it; busy workers take queued work as they finish.
type Queue struct {
	name     string
	batching Batching
	stats    *Stats

	mu       sync.Mutex
	tasks    []*Task
	idle     []*waiter // workers waiting in Next, most recently idle last
	routable int
	closed   error
	filling  int           // workers in fill, waiting for more requests
	more     chan struct{} // closed and replaced when requests arrive while filling

	onDrop func() // see OnDropped; set before the queue is used
}

// OnDropped sets a function called for every response a model sends after
// its request ended (the client left, a limit passed): such responses are
// dropped, never written to a dead connection. Call it before the queue
// takes requests.
func (q *Queue) OnDropped(f func()) { q.onDrop = f }

// A waiter is one worker waiting in Next.
type waiter struct {
	ctx  context.Context
	run  func([]*Task) // runs a batch on the worker's instance; nil: no direct runs
	wake chan struct{} // buffered 1
	// Guarded by Queue.mu.
	idle    bool // in Queue.idle
	claimed bool // Submit is running a request on its instance
	leaving bool // Next returns as soon as the claim ends
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// NewQueue returns the queue of the model version called name (used in
// messages), recording statistics into stats.
func NewQueue(name string, b Batching, stats *Stats) *Queue {
	return &Queue{name: name, batching: b, stats: stats, more: make(chan struct{})}
}

// SetRoutable tells the queue how many instances can take work (the health
// snapshot's count; the queue decides nothing about it). When it
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
		t.Finish(nil, noRoutable(q.name))
	}
}

// Close fails every waiting request with err and refuses new ones.
func (q *Queue) Close(err error) {
	q.mu.Lock()
	q.closed = err
	failed := q.tasks
	q.tasks = nil
	for _, w := range q.idle {
		w.idle = false
		w.signal()
	}
	q.idle = nil
	q.mu.Unlock()
	for _, t := range failed {
		t.Finish(nil, err)
	}
}

// Submit runs req on an instance and waits for its result or for ctx to
// end. size is the request's batch dimension (1 for models that do not
// batch). The request must end with exactly one response: returned by
// execute, or sent through its response sender.
func (q *Queue) Submit(ctx context.Context, req *inference.Request, size int) (*inference.Response, error) {
	t := newTask(ctx, req, size, false)
	t.onDrop = q.onDrop
	if err := q.admit(t); err != nil {
		return nil, err
	}
	return q.wait(ctx, t)
}

// wait waits for an admitted task's result or for ctx to end, and counts
// the request in the statistics.
func (q *Queue) wait(ctx context.Context, t *Task) (*inference.Response, error) {
	for !t.ended() {
		select {
		case <-t.wake:
		case <-ctx.Done():
			// The task may still be running; its result is dropped.
			if t.Finish(nil, ctx.Err()) {
				q.stats.recordEnded(t, ctx.Err(), q.started(t))
				return nil, q.ctxError(ctx)
			}
		}
	}
	r := t.result()
	q.stats.record(t, r)
	if r.Err == nil && r.Response == nil {
		return nil, apierr.New(apierr.Internal, "model %s ended the request without a response", q.name)
	}
	return r.Response, r.Err
}

// Stream runs req on an instance and passes each of its responses to emit,
// on the calling goroutine and in the order the model sent them, until the
// request ends: the model sent FINAL, an error ended it, its instance died
// or stalled, or ctx ended. The last Reply emitted has Final set (it may
// carry neither a response nor an error: a flag-only FINAL), unless ctx
// ended or emit failed first; Stream then returns that error, and the
// model sees the request cancelled. An error returned before anything was
// emitted means the request was refused.
func (q *Queue) Stream(ctx context.Context, req *inference.Request, size int, emit func(Reply) error) error {
	t := newTask(ctx, req, size, true)
	t.onDrop = q.onDrop
	if err := q.admit(t); err != nil {
		return err
	}
	for {
		select {
		case <-t.wake:
		case <-ctx.Done():
			if t.Finish(nil, ctx.Err()) {
				q.stats.recordEnded(t, ctx.Err(), q.started(t))
				return q.ctxError(ctx)
			}
		}
		replies, finished := t.take()
		for _, r := range replies {
			if err := emit(r); err != nil {
				if t.Finish(nil, apierr.Wrap(apierr.Cancelled, err, "model %s: the client stopped reading", q.name)) {
					q.stats.record(t, Result{Err: err})
				}
				return err
			}
		}
		if finished {
			q.stats.record(t, t.result())
			return nil
		}
	}
}

// started reports whether a worker has started t. A worker may be
// starting it right now: started is written under q.mu (batchLocked), or
// by the submitter itself (runDirect).
func (q *Queue) started(t *Task) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !t.started.IsZero()
}

// ctxError is the error for a request whose context ended.
func (q *Queue) ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return apierr.Wrap(apierr.DeadlineExceeded, ctx.Err(), "model %s: request deadline exceeded", q.name)
	}
	return ctx.Err()
}

// ErrNoRoutable is the cause of a request refused (or failed while it
// waited) because no instance of its model version is routable; the model
// manager explains it with the version's health.
var ErrNoRoutable = errors.New("no routable instance")

func noRoutable(name string) error {
	return &apierr.Error{Code: apierr.Unavailable, RetryAfter: time.Second, Err: ErrNoRoutable,
		Msg: fmt.Sprintf("model %s has no routable instance", name)}
}

// refusalLocked is why the queue takes no request at all now, or nil: it
// is closed, or no instance is routable (counted as a rejection).
func (q *Queue) refusalLocked() error {
	switch {
	case q.closed != nil:
		return q.closed
	case q.routable == 0:
		q.stats.reject()
		return noRoutable(q.name)
	}
	return nil
}

// admit queues t, or runs it directly on an idle instance, or refuses it.
func (q *Queue) admit(t *Task) error {
	q.mu.Lock()
	if err := q.refusalLocked(); err != nil {
		q.mu.Unlock()
		return err
	}
	if q.batching.MaxQueue > 0 && len(q.tasks) >= q.batching.MaxQueue {
		q.mu.Unlock()
		q.stats.reject()
		return &apierr.Error{Code: apierr.ResourceExhausted, RetryAfter: time.Second,
			Msg: "model " + q.name + " has too many queued requests"}
	}
	if w := q.claimLocked(t.ctx, t.size); w != nil {
		q.mu.Unlock()
		q.runDirect(w, t)
	} else {
		q.tasks = append(q.tasks, t)
		q.dispatchLocked()
		q.mu.Unlock()
	}
	return nil
}

// claimLocked returns the idle worker that a request of the given size may
// run on directly, marked claimed, or nil when the request must queue:
// something is queued already (it goes first), no worker is idle, the
// request has a deadline (a queued request can give up at its deadline
// while its batch runs on; a request run directly cannot) or has already
// ended, or the only idle worker would hold the request back to gather a
// dynamic batch.
func (q *Queue) claimLocked(ctx context.Context, size int) *waiter {
	n := len(q.idle)
	if len(q.tasks) > 0 || n == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); ok || ctx.Err() != nil {
		return nil
	}
	if q.batching.Dynamic && q.batching.MaxDelay > 0 && size < q.batching.MaxBatchSize && n < 2 {
		return nil
	}
	w := q.idle[n-1]
	if w.run == nil || w.ctx.Err() != nil {
		return nil
	}
	q.idle = q.idle[:n-1]
	w.idle = false
	w.claimed = true
	return w
}

// runDirect runs t alone on w's instance, then hands w back: to the idle
// list, or awake if work queued up meanwhile or its Next is leaving.
func (q *Queue) runDirect(w *waiter, t *Task) {
	defer func() {
		q.mu.Lock()
		w.claimed = false
		if w.leaving || len(q.tasks) > 0 || q.closed != nil {
			w.signal()
		} else {
			w.idle = true
			q.idle = append(q.idle, w)
		}
		q.mu.Unlock()
	}()
	t.started = time.Now()
	w.run([]*Task{t})
}

// dispatchLocked wakes one idle worker for queued work, and any worker
// gathering a batch.
func (q *Queue) dispatchLocked() {
	if len(q.tasks) == 0 {
		return
	}
	if q.filling > 0 {
		close(q.more)
		q.more = make(chan struct{})
	}
	if n := len(q.idle); n > 0 {
		w := q.idle[n-1]
		q.idle = q.idle[:n-1]
		w.idle = false
		w.signal()
	}
}

// unidleLocked takes w off the idle list.
func (q *Queue) unidleLocked(w *waiter) {
	if !w.idle {
		return
	}
	w.idle = false
	for k, x := range q.idle {
		if x == w {
			q.idle = append(q.idle[:k], q.idle[k+1:]...)
			break
		}
	}
}

// Next blocks until it can hand out a batch or ctx ends. Tasks whose client
// has gone are dropped on the way. A worker counts as idle from the moment
// it finds nothing to do until it takes a batch. While it is idle, Submit
// may run requests through run, one at a time, on the submitting
// goroutines; Next does not return while such a run is in progress. run may
// be nil.
func (q *Queue) Next(ctx context.Context, run func([]*Task)) ([]*Task, error) {
	w := &waiter{ctx: ctx, run: run, wake: make(chan struct{}, 1)}
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if !w.claimed {
			if q.closed != nil {
				q.unidleLocked(w)
				return nil, q.closed
			}
			q.dropCancelledLocked()
			if len(q.tasks) > 0 {
				q.unidleLocked(w)
				return q.batchLocked(ctx), nil
			}
			if !w.idle {
				w.idle = true
				q.idle = append(q.idle, w)
			}
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-w.wake:
		}
		q.mu.Lock()
		if ctx.Err() != nil {
			for w.claimed {
				w.leaving = true
				q.mu.Unlock()
				<-w.wake
				q.mu.Lock()
			}
			q.unidleLocked(w)
			// A wake-up meant for this worker goes to another.
			q.dispatchLocked()
			return nil, ctx.Err()
		}
	}
}

// batchLocked takes the next batch, waiting (unlocked) to fill it when
// dynamic batching asks for that.
func (q *Queue) batchLocked(ctx context.Context) []*Task {
	batch := q.takeLocked()
	if q.batching.Dynamic && q.batching.MaxDelay > 0 && batchSize(batch) < q.batching.MaxBatchSize &&
		!q.batching.gatheredPreferred(batch) {
		q.mu.Unlock()
		batch = q.fill(ctx, batch)
		q.mu.Lock()
	}
	if q.batching.Dynamic {
		batch = q.applyPreferredLocked(batch)
	}
	now := time.Now()
	for _, t := range batch {
		t.started = now
	}
	return batch
}

// fill waits up to MaxDelay for more requests to join batch. It does not
// wait while another worker is idle: that worker would serve the next
// request at once, so holding this batch back only adds latency.
func (q *Queue) fill(ctx context.Context, batch []*Task) []*Task {
	deadline := time.NewTimer(q.batching.MaxDelay)
	defer deadline.Stop()
	for batchSize(batch) < q.batching.MaxBatchSize && !q.batching.gatheredPreferred(batch) {
		q.mu.Lock()
		if len(q.tasks) > 0 && q.fitsLocked(batch) {
			batch = append(batch, q.takeMoreLocked(batch)...)
			q.mu.Unlock()
			continue
		}
		if len(q.idle) > 0 {
			q.mu.Unlock()
			return batch
		}
		more := q.more
		q.filling++
		q.mu.Unlock()
		var stop bool
		select {
		case <-more:
		case <-deadline.C:
			stop = true
		case <-ctx.Done():
			stop = true
		}
		q.mu.Lock()
		q.filling--
		q.mu.Unlock()
		if stop {
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

// Len is the number of waiting requests.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tasks)
}
