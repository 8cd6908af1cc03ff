package memfile

import (
	"runtime"
	"sync/atomic"
	"time"
)

// A Reclaimer bounds the bytes of memory files that wait for the garbage
// collector: files whose last user ended with an error and that go only
// once nothing views them (runtime.AddCleanup). The collector's pacing
// sees the Go heap, not these files, so a stream of failing requests with
// large tensors would pile them up between collections (gigabytes, with a
// few megabytes of heap). Past its limit, Wait runs a collection, at most
// one per reclaimInterval, after which their cleanups run. Use
// NewReclaimer; a nil Reclaimer counts nothing and never collects. It is
// safe for concurrent use.
type Reclaimer struct {
	limit   int64
	waiting atomic.Int64
	last    atomic.Int64 // unix nanoseconds of the last collection Wait ran
}

// reclaimInterval is the least time between two collections a Reclaimer
// runs.
const reclaimInterval = 50 * time.Millisecond

// NewReclaimer returns a Reclaimer that collects once more than limit bytes
// wait.
func NewReclaimer(limit int64) *Reclaimer { return &Reclaimer{limit: limit} }

// Wait counts n bytes that wait for the collector, from a goroutine that
// may block for one collection, and runs one if too many wait.
func (r *Reclaimer) Wait(n int64) {
	if r == nil || r.waiting.Add(n) <= r.limit {
		return
	}
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(reclaimInterval) || !r.last.CompareAndSwap(last, now) {
		return
	}
	runtime.GC()
}

// Done uncounts n bytes whose files went (from their cleanup).
func (r *Reclaimer) Done(n int64) {
	if r != nil {
		r.waiting.Add(-n)
	}
}

// Waiting is the bytes counted now.
func (r *Reclaimer) Waiting() int64 { return r.waiting.Load() }
