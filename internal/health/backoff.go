package health

import "time"

// backoff is the restart delay sequence of one instance: the first restart
// is immediate, the next waits initial, and every further one doubles the
// wait up to max: 0, 1s, 2s, 4s, … 5m, 5m. reset starts the sequence over;
// the tracker calls it once the instance has been healthy for the policy's
// BackoffReset.
type backoff struct {
	initial time.Duration
	max     time.Duration
	n       int // restarts taken since the last reset
}

// next returns the delay before the next restart and advances the sequence.
func (b *backoff) next() time.Duration {
	n := b.n
	b.n++
	if n == 0 || b.initial <= 0 {
		return 0
	}
	d := b.initial
	for i := 1; i < n; i++ {
		d *= 2
		if b.max > 0 && d >= b.max {
			return b.max
		}
	}
	if b.max > 0 && d > b.max {
		return b.max
	}
	return d
}

// reset starts the sequence over: the next restart is immediate again.
func (b *backoff) reset() { b.n = 0 }
