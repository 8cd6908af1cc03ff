package health

import (
	"sync"
	"sync/atomic"
	"time"
)

// WatchdogMissedIntervals is how many watchdog intervals the event loop may
// leave a ping unanswered before the engine reports itself stalled (and
// /livez fails).
const WatchdogMissedIntervals = 3

// watchdog detects a stuck event loop. Every interval the watchdog timer
// (a timer callback, not the loop) pings the loop; the loop acknowledges on
// every iteration. The loop counts as stalled once its oldest unanswered
// ping is at least WatchdogMissedIntervals intervals old and that many
// watchdog ticks have passed since: both conditions, so that one big jump
// of a fake clock, or a machine resuming from suspend, cannot by itself
// look like a stall. The flag is an atomic that Engine.Snapshot consults,
// so the stall is visible even though the loop cannot publish anything.
type watchdog struct {
	interval time.Duration
	limit    int

	mu      sync.Mutex
	sent    uint64    // pings sent
	acked   uint64    // pings the loop had seen at its last iteration
	oldest  time.Time // when the oldest unanswered ping was sent; zero if none
	missed  int       // ticks since oldest
	stalled atomic.Bool
}

func newWatchdog(interval time.Duration) *watchdog {
	return &watchdog{interval: interval, limit: WatchdogMissedIntervals}
}

// tick runs once per interval: it judges the loop by the pings sent so far,
// then sends the next one. It reports whether the stalled flag changed.
func (w *watchdog) tick(now time.Time) (changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.acked >= w.sent {
		w.oldest, w.missed = time.Time{}, 0
	} else {
		w.missed++
	}
	stalled := w.missed >= w.limit && now.Sub(w.oldest) >= time.Duration(w.limit)*w.interval
	changed = w.stalled.Swap(stalled) != stalled
	w.sent++
	if w.oldest.IsZero() {
		w.oldest = now
	}
	return changed
}

// ack is called by the loop on every iteration. It reports whether it
// cleared a stall (the loop is moving again).
func (w *watchdog) ack() (cleared bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acked = w.sent
	w.oldest, w.missed = time.Time{}, 0
	return w.stalled.Swap(false)
}

// isStalled reports the flag without locking; safe from any goroutine.
func (w *watchdog) isStalled() bool { return w != nil && w.stalled.Load() }
