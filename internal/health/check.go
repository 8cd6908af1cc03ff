package health

import "time"

// checkState is one check of one instance: the raw last result next to the
// effective state that the thresholds produce.
//
// Counting follows the kubelet prober: consecutive identical results are
// counted, any change of result starts the run over at 1, and the effective
// state flips only when the run reaches the threshold (FailureThreshold for
// failures, SuccessThreshold for successes). The first counted result after
// a (re)start applies at once, as Consul's StatusHandler does by starting its
// counters at the thresholds. Before any result a check is "unknown", which
// the engine shows as passing: the instance's readiness then follows its
// initialize, not a check that has not run yet.
type checkState struct {
	// Effective state.
	known   bool // a counted result was seen since the (re)start
	passing bool
	since   time.Time

	// Raw signal, never hidden by thresholds.
	lastOK  bool
	lastMsg string
	lastAt  time.Time
	rawRun  int    // consecutive identical raw results
	failMsg string // message of the most recent raw failure

	// Counted run toward the thresholds (failures inside the restart check
	// delay are not counted).
	run   int
	runOK bool
}

// reset forgets every result: a new process starts with unknown checks.
func (c *checkState) reset(now time.Time) {
	*c = checkState{passing: true, since: now}
}

// raw records a raw result without touching the effective state.
func (c *checkState) raw(ok bool, msg string, now time.Time) {
	if c.lastAt.IsZero() || c.lastOK != ok {
		c.rawRun = 1
	} else {
		c.rawRun++
	}
	c.lastOK, c.lastMsg, c.lastAt = ok, msg, now
	if !ok {
		c.failMsg = msg
	}
}

// observe records a raw result and, when counted, applies the thresholds.
// It reports whether the effective state flipped.
func (c *checkState) observe(ok bool, msg string, now time.Time, counted bool, failureThreshold, successThreshold int) bool {
	c.raw(ok, msg, now)
	if !counted {
		return false
	}
	if c.run > 0 && c.runOK == ok {
		c.run++
	} else {
		c.run, c.runOK = 1, ok
	}
	if !c.known {
		c.known = true
		return c.setEffective(ok, now)
	}
	threshold := failureThreshold
	if ok {
		threshold = successThreshold
	}
	if c.run >= max(threshold, 1) {
		return c.setEffective(ok, now)
	}
	return false
}

// force records a raw result and sets the effective state to pass directly,
// with no threshold (the progress and errors checks).
func (c *checkState) force(ok bool, msg string, now time.Time, pass bool) bool {
	c.raw(ok, msg, now)
	c.known = true
	return c.setEffective(pass, now)
}

func (c *checkState) setEffective(pass bool, now time.Time) bool {
	if c.passing == pass {
		return false
	}
	c.passing, c.since = pass, now
	return true
}

// health is the snapshot view of the check.
func (c *checkState) health(name Check) CheckHealth {
	return CheckHealth{
		Name:        name,
		Passing:     c.passing,
		LastOK:      c.lastOK,
		LastMessage: c.lastMsg,
		LastAt:      c.lastAt,
		Consecutive: c.rawRun,
		Since:       c.since,
	}
}
