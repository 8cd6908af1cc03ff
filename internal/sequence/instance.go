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

// Next blocks until a batch is ready for the instance or ctx ends. run is
// not used: sequence batches always go through the worker.
func (in *Instance) Next(ctx context.Context, _ func([]*scheduler.Task)) ([]*scheduler.Task, error) {
	b := in.b
	b.mu.Lock()
	if ctx.Err() == nil {
		in.attachLocked(ctx)
	}
	for {
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
		b.mu.Unlock()
		failed.finish()
		b.report()
		if batch != nil {
			return batch, nil
		}
		in.sleep(ctx, wait)
		b.mu.Lock()
	}
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
