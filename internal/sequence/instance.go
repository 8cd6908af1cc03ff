package sequence

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// Instance is the source of one instance's batches (an instance.Source):
// the instance's worker calls Next while the instance is in traffic.
type Instance struct {
	b     *Batcher
	name  string
	wake  chan struct{} // buffered 1
	slots []*sequence   // guarded by Batcher.mu, like the rest
	// session is the context of the worker's current Next calls: the
	// instance takes new sequences only while it is live.
	session context.Context
	dirty   bool // open sequences changed since the last report
	// While the worker waits in Next with nothing to take, idleRun is the
	// run it was given and idleCtx its context: Submit may run a request on
	// the instance from its own goroutine through them (claimed is set
	// meanwhile, and the worker takes nothing until the run is over).
	idleRun func([]*scheduler.Task)
	idleCtx context.Context
	claimed bool
	// claimWaiter is set while the worker waits for a claim to end; only
	// then does the claim's end wake it (an idle worker left asleep costs
	// nothing, a woken one a thread wake-up per request).
	claimWaiter bool
}

func (in *Instance) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

func (in *Instance) liveLocked() bool { return in.session != nil && in.session.Err() == nil }

func (in *Instance) openLocked() int {
	n := 0
	for _, s := range in.slots {
		if s != nil {
			n++
		}
	}
	return n
}

// attachLocked records ctx as the worker's session; when it ends, the
// instance takes no new sequences until the worker is back.
func (in *Instance) attachLocked(ctx context.Context) {
	if in.session == ctx {
		return
	}
	in.session = ctx
	in.dirty = true // first report: the instance's slots
	b := in.b
	context.AfterFunc(ctx, func() {
		b.mu.Lock()
		if in.session == ctx {
			in.session = nil
		}
		b.mu.Unlock()
	})
	b.assignLocked()
}

// Next blocks until a batch is ready for the instance or ctx ends. While it
// waits with nothing to take, Submit may run a request that is alone in
// being ready on the instance through run, on the submitting goroutine (see
// claimLocked); Next does not return while such a run is in progress. run
// may be nil.
func (in *Instance) Next(ctx context.Context, run func([]*scheduler.Task)) ([]*scheduler.Task, error) {
	b := in.b
	b.mu.Lock()
	if ctx.Err() == nil {
		in.attachLocked(ctx)
	}
	for {
		if in.claimed {
			// A request runs on the instance from its submitter: nothing
			// else goes to the instance until it is over (it signals).
			in.claimWaiter = true
			b.mu.Unlock()
			<-in.wake
			b.mu.Lock()
			in.claimWaiter = false
			continue
		}
		if b.closeErr != nil {
			err := b.closeErr
			b.mu.Unlock()
			return nil, err
		}
		if ctx.Err() != nil {
			b.mu.Unlock()
			return nil, ctx.Err()
		}
		batch, wait, failed := in.takeLocked(b.cfg.Now())
		if batch == nil && run != nil {
			in.idleRun, in.idleCtx = run, ctx
		}
		b.mu.Unlock()
		failed.finish()
		b.report()
		if batch != nil {
			return batch, nil
		}
		in.sleep(ctx, wait)
		b.mu.Lock()
		in.idleRun, in.idleCtx = nil, nil
	}
}

// claimLocked takes it as a batch of its own to run on the submitting
// goroutine, with the run of the instance's idle worker, and marks the
// instance claimed; or returns nil when the request goes through the
// worker: the worker is not idle, the instance is out of traffic, it is not
// its sequence's next request, another sequence of the instance has a
// request ready (they go together, as one batch, from the worker), the
// batch would wait for more (minimum_slot_utilization), or the request has
// a deadline (a request that waits for the worker can give up at its
// deadline while its batch runs on; one run from its own goroutine cannot).
// Requests takeLocked could not build come back in failed.
func (in *Instance) claimLocked(it *item) (batch []*scheduler.Task, run func([]*scheduler.Task), failed failures) {
	seq := it.seq
	if in.idleRun == nil || in.claimed || in.idleCtx.Err() != nil || !in.liveLocked() ||
		seq.inst != in || seq.running || len(seq.pending) == 0 || seq.pending[0] != it {
		return nil, nil, nil
	}
	if _, ok := it.ctx.Deadline(); ok || it.ctx.Err() != nil {
		return nil, nil, nil
	}
	for _, s := range in.slots {
		if s != nil && s != seq && !s.running && len(s.pending) > 0 {
			return nil, nil, nil
		}
	}
	batch, _, failed = in.takeLocked(in.b.cfg.Now())
	if batch == nil {
		return nil, nil, failed
	}
	in.claimed = true
	return batch, in.idleRun, failed
}

// runClaimed runs batch, claimed by claimLocked, through run, then hands the
// instance back to its worker.
func (in *Instance) runClaimed(batch []*scheduler.Task, run func([]*scheduler.Task)) {
	defer func() {
		in.b.mu.Lock()
		in.claimed = false
		wake := in.claimWaiter
		in.b.mu.Unlock()
		if wake {
			// The worker woke during the run (requests came meanwhile, its
			// Next is leaving, or the batcher closed): it looks again.
			in.signal()
		}
	}()
	run(batch)
}

// sleep waits for a wake-up, wait (when > 0), ctx or Close.
func (in *Instance) sleep(ctx context.Context, wait time.Duration) {
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
	case <-in.wake:
	case <-timer:
	case <-in.b.closed:
	}
}

// takeLocked forms the next batch, or says how long to wait for one to be
// worth sending (0: wait for a request). Requests that cannot be built
// come back in failed, to be finished unlocked.
func (in *Instance) takeLocked(now time.Time) (batch []*scheduler.Task, wait time.Duration, failed failures) {
	b := in.b
	var ready []*sequence
	for _, s := range in.slots {
		if s != nil && !s.running && len(s.pending) > 0 && s.pending[0].ctx.Err() == nil {
			ready = append(ready, s)
		}
	}
	if len(ready) == 0 {
		return nil, 0, nil
	}
	limit := max(1, b.cfg.MaxBatchSize)
	if b.cfg.Strategy == Oldest {
		slices.SortStableFunc(ready, func(x, y *sequence) int {
			return x.pending[0].task.Enqueued().Compare(y.pending[0].task.Enqueued())
		})
	}
	oldest := ready[0].pending[0].task.Enqueued()
	for _, s := range ready[1:] {
		if e := s.pending[0].task.Enqueued(); e.Before(oldest) {
			oldest = e
		}
	}
	if wait := in.holdLocked(len(ready), limit, now.Sub(oldest)); wait > 0 {
		return nil, wait, nil
	}
	if len(ready) > limit {
		ready = ready[:limit]
	}
	batch = make([]*scheduler.Task, 0, len(ready))
	for _, s := range ready {
		it := s.pending[0]
		if err := b.prepareLocked(s, it); err != nil {
			// The request cannot be built: it fails alone (its hook
			// takes it out of pending), the sequence stays as it was.
			failed = append(failed, failure{it.task, err})
			continue
		}
		s.pending = s.pending[1:]
		s.running = true
		it.handed = true
		it.task.MarkStarted(now)
		batch = append(batch, it.task)
	}
	if len(batch) == 0 {
		return nil, 0, failed
	}
	return batch, 0, failed
}

// holdLocked says how much longer a batch of n ready requests (at most
// limit), the oldest of which has waited waited, should wait for more.
func (in *Instance) holdLocked(n, limit int, waited time.Duration) time.Duration {
	cfg := in.b.cfg
	if cfg.MaxDelay <= 0 || n >= limit || waited >= cfg.MaxDelay {
		return 0
	}
	switch cfg.Strategy {
	case Direct:
		if cfg.MinSlotUtilization <= 0 {
			return 0
		}
		need := int(math.Ceil(cfg.MinSlotUtilization * float64(len(in.slots))))
		if n >= need {
			return 0
		}
	case Oldest:
		if slices.Contains(cfg.Preferred, n) || (len(cfg.Preferred) > 0 && n > slices.Max(cfg.Preferred)) {
			return 0
		}
	}
	return cfg.MaxDelay - waited
}

// GenerationEnded is the instance's news that its process is gone: every
// sequence it held is lost with it.
func (in *Instance) GenerationEnded(how string) {
	b := in.b
	var failed failures
	b.mu.Lock()
	for k, s := range in.slots {
		if s == nil || s.session.Err() == nil {
			// A sequence whose session lives was placed on the process
			// that replaced the one that ended.
			continue
		}
		msg := fmt.Sprintf("sequence %s was lost: instance %s %s", s.id, in.name, how)
		b.log.Warn("sequence lost", "sequence", s.id.String(), "instance", in.name, "how", how)
		in.slots[k] = nil
		s.inst = nil
		if b.seqs[s.id] == s {
			delete(b.seqs, s.id)
			if !s.ended {
				b.rememberLostLocked(s.id, msg)
			}
		}
		for _, it := range s.pending {
			failed = append(failed, failure{it.task, apierr.Unavailablef("%s", msg)})
		}
		s.pending = nil
		in.dirty = true
	}
	if in.session != nil && in.session.Err() != nil {
		in.session = nil
	}
	b.assignLocked()
	b.mu.Unlock()
	failed.finish()
	b.report()
}
