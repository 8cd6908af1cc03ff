package health

import "time"

// Clock is the engine's source of time. Production code uses the real clock
// (a nil Clock in EngineConfig); tests inject a fake such as
// healthtest.Clock so that every threshold, backoff and watchdog decision is
// deterministic.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f once, after d, in its own goroutine (or, for a fake
	// clock, from the goroutine that advances time). stop cancels the call
	// and reports whether it did so before f ran. f must not block.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}
