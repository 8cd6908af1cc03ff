package health

import (
	"fmt"
	"strings"
	"time"
)

// transitionRingSize is how many recent transitions an instance keeps.
const transitionRingSize = 16

// The instance's checks in their snapshot order.
const (
	ixProcess = iota
	ixHeartbeat
	ixProgress
	ixHook
	ixErrors
	numChecks
)

func checkName(i int) Check {
	return [numChecks]Check{CheckProcess, CheckHeartbeat, CheckProgress, CheckHook, CheckErrors}[i]
}

// tracker is the state machine of one model instance. It is a pure,
// deterministic step function: step consumes one event, tick advances time
// (duration thresholds and backoff timers), nextDeadline says when tick must
// run next. Neither does I/O; both return the actions the engine's loop
// carries out. Only the loop goroutine touches a tracker.
//
// States (SPEC §6):
//
//	STARTING ──initialized──▶ READY ──check fails──▶ UNHEALTHY ──stop_traffic──▶ OUT_OF_TRAFFIC
//	   ▲                        ▲ ◀──all checks pass───────┴──────────────────────────┤
//	   │                        │                                        restart_threshold,
//	spawned                     │                                        hang (progress)
//	   │                                                                          ▼
//	RESTARTING ◀──backoff elapsed── EXITED ◀──exit / init failed──(any live state)   RESTARTING
//	   (breaker: max_restarts within restart_window) ──▶ FAILED (terminal until reload)
//	unload ──▶ STOPPING ──exit/stopped──▶ STOPPED
//
// Routable (in traffic) exactly in READY and UNHEALTHY (InstanceState.Routable,
// the one rule). Every change of it produces one SetRoutable action; every state change produces
// one transition action and one entry in the transition ring.
type tracker struct {
	key InstanceKey
	pol Policy

	state    InstanceState
	reason   string
	since    time.Time
	pid      int
	restarts int    // restarts issued (Actuator.Restart calls)
	lastExit string // "exit code 1", "signal killed"
	// sequences is the latest SequencesChanged (shared with snapshots,
	// never modified: replaced).
	sequences *SequenceSlots

	checks       [numChecks]checkState
	consecErrors int       // failed executes in a row
	failingSince time.Time // when some check's effective state started failing; zero when all pass
	graceUntil   time.Time // check failures before this do not count
	healthySince time.Time // entered READY; zero when not READY

	// Restart machinery.
	backoff       backoff
	restartLog    []time.Time // restart decisions, for the crash-loop breaker
	restartAt     time.Time   // a decided restart waits for its backoff; zero when none
	restartCause  string
	restartIssued bool   // Restart was called; waiting for the new process
	failedReason  string // why the breaker made the instance FAILED; kept while it is retried
	retrying      bool   // a FAILED instance's retry process is initializing
	noRestart     bool   // the server is draining: exits are recorded, never restarted
	retired       bool   // the version is unloading, unloaded or failed to load: never started again

	ring []Transition
	out  []action
}

func newTracker(key InstanceKey, pol Policy, now time.Time) *tracker {
	t := &tracker{
		key:     key,
		pol:     pol,
		state:   StateStarting,
		reason:  "waiting for the process to start",
		since:   now,
		backoff: backoff{initial: pol.BackoffInitial, max: pol.BackoffMax},
	}
	t.resetChecks(now)
	return t
}

// step applies one instance event and returns the resulting actions.
func (t *tracker) step(ev Event, now time.Time) []action {
	t.out = nil
	if ev.Kind != InstanceSpawned && t.stale(ev.PID) {
		// An event of a process this instance no longer runs (the old
		// process of a restart reporting late) says nothing about the
		// current one.
		return nil
	}
	switch ev.Kind {
	case InstanceSpawned:
		t.onSpawned(ev, now)
	case InstanceInitialized:
		t.onInitialized(now)
	case InstanceInitFailed:
		t.onInitFailed(ev, now)
	case InstanceExited:
		t.onExited(ev, now)
	case InstanceStopped:
		t.onStopped(ev, now)
	case CheckResult:
		t.onCheck(ev, now)
	case ExecuteResult:
		t.onExecute(ev, now)
	case InstanceSuspended:
		t.onSuspended(ev, now)
	case InstanceResumed:
		t.onResumed(now)
	}
	t.evaluate(now)
	return t.out
}

// tick advances time: a restart whose backoff has elapsed is issued, and the
// stop-traffic and restart thresholds of a failing instance are applied.
func (t *tracker) tick(now time.Time) []action {
	t.out = nil
	if !t.restartAt.IsZero() && !now.Before(t.restartAt) {
		t.issueRestart(now)
	}
	if t.live() {
		for _, i := range []int{ixHeartbeat, ixHook} {
			if d := t.silentAfter(i); !d.IsZero() && !now.Before(d) {
				c := &t.checks[i]
				c.force(false, fmt.Sprintf("no result for %s", now.Sub(c.lastAt)), now, false)
				t.emit(action{kind: actCheck, key: t.key, check: checkName(i), ok: false})
			}
		}
	}
	t.evaluate(now)
	return t.out
}

// silentAfter is when periodic check i counts as failed for lack of
// results: 2 periods plus its timeout after its last result (Consul's TTL
// rule). A check that has not reported since the process started is never
// silent, so a supervisor that does not run a check (no hook in model.py)
// cannot fail it; one that stops reporting can. Zero when not applicable.
func (t *tracker) silentAfter(i int) time.Time {
	period, timeout := t.pol.HeartbeatPeriod, t.pol.HeartbeatTimeout
	if i == ixHook {
		period, timeout = t.pol.Period, t.pol.Timeout
	}
	c := &t.checks[i]
	if period <= 0 || c.lastAt.IsZero() {
		return time.Time{}
	}
	d := c.lastAt.Add(2*period + timeout)
	if d.Before(t.graceUntil) {
		d = t.graceUntil // silence inside the restart check delay does not count either
	}
	return d
}

// nextDeadline is the earliest time tick has something to do; zero if none.
func (t *tracker) nextDeadline() time.Time {
	var d time.Time
	earliest := func(c time.Time) {
		if !c.IsZero() && (d.IsZero() || c.Before(d)) {
			d = c
		}
	}
	earliest(t.restartAt)
	if t.live() {
		earliest(t.silentAfter(ixHeartbeat))
		earliest(t.silentAfter(ixHook))
	}
	if t.live() && !t.failingSince.IsZero() {
		if t.state == StateUnhealthy {
			earliest(t.failingSince.Add(t.pol.StopTrafficThreshold))
		}
		if !t.noRestart {
			earliest(t.failingSince.Add(t.restartAfter()))
		}
	}
	return d
}

// live reports whether the instance's process is initialized and being
// judged by its checks.
func (t *tracker) live() bool {
	return t.state == StateReady || t.state == StateUnhealthy || t.state == StateOutOfTraffic
}

// stale reports whether pid names another process than the instance's
// current one. Events without a PID are never stale.
func (t *tracker) stale(pid int) bool {
	return pid != 0 && t.pid != 0 && pid != t.pid
}

// restartAfter is the continuous-failure duration that restarts an
// instance; never shorter than the stop-traffic threshold.
func (t *tracker) restartAfter() time.Duration {
	return max(t.pol.RestartThreshold, t.pol.StopTrafficThreshold)
}

func (t *tracker) resetChecks(now time.Time) {
	for i := range t.checks {
		if i == ixProcess {
			continue
		}
		t.checks[i].reset(now)
	}
	t.consecErrors = 0
	t.failingSince = time.Time{}
}

func (t *tracker) onSpawned(ev Event, now time.Time) {
	if t.retired {
		// A retired instance's late spawn (a restart racing an unload) is
		// ignored.
		return
	}
	if t.state == StateFailed {
		if !t.restartIssued {
			return
		}
		// A retry of a FAILED instance: it stays FAILED (liveness keeps
		// failing) until its initialize returns.
		t.pid = ev.PID
		t.restartIssued, t.retrying = false, true
		t.graceUntil = time.Time{}
		t.resetChecks(now)
		t.checks[ixProcess].reset(now)
		t.checks[ixProcess].force(true, fmt.Sprintf("running (pid %d)", ev.PID), now, true)
		t.moveTo(StateFailed, t.failedReason+"; retry running", now)
		return
	}
	// A restart says what it recovers from, so that a probe during the new
	// initialize explains the gap.
	starting := "initializing"
	if t.restartCause != "" {
		starting = "initializing after a restart (" + t.restartCause + ")"
	}
	t.pid = ev.PID
	t.restartAt, t.restartIssued = time.Time{}, false
	t.graceUntil = time.Time{}
	t.resetChecks(now)
	msg := "running"
	if ev.PID != 0 {
		msg = fmt.Sprintf("running (pid %d)", ev.PID)
	}
	t.checks[ixProcess].reset(now)
	t.checks[ixProcess].force(true, msg, now, true)
	t.moveTo(StateStarting, starting, now)
}

func (t *tracker) onInitialized(now time.Time) {
	if t.state == StateFailed && t.retrying && !t.retired {
		// The retry of a FAILED instance worked: it heals by itself.
		t.failedReason, t.retrying = "", false
		t.resetChecks(now)
		t.graceUntil = now.Add(t.pol.RestartCheckDelay)
		t.moveTo(StateReady, "initialized (retried after restarts were exhausted)", now)
		return
	}
	if t.state != StateStarting && t.state != StateRestarting {
		return
	}
	t.resetChecks(now)
	t.graceUntil = now.Add(t.pol.RestartCheckDelay)
	t.moveTo(StateReady, "initialized", now)
}

func (t *tracker) onInitFailed(ev Event, now time.Time) {
	if t.state == StateFailed {
		t.retryFailed(now)
		return
	}
	if t.state != StateStarting && t.state != StateRestarting {
		return
	}
	cause := "initialize failed"
	switch {
	case (ev.Cause == CauseModelRaised || ev.Cause == CauseHang) && ev.Reason != "":
		// Already says so: "initialize raised ValueError: …",
		// "initialize hung: …".
		cause = ev.Reason
	case ev.Reason != "":
		cause += ": " + ev.Reason
	}
	t.crash(cause, now)
}

func (t *tracker) onExited(ev Event, now time.Time) {
	exit := exitString(ev)
	t.lastExit = exit
	t.checks[ixProcess].force(false, exit, now, false)
	cause := exit
	if ev.Reason != "" {
		cause += ": " + ev.Reason
	}
	switch t.state {
	case StateStopping:
		t.moveTo(StateStopped, "stopped: "+cause, now)
	case StateFailed:
		// A retry's process died: the next retry waits the maximum backoff.
		t.retryFailed(now)
	case StateStopped, StateExited:
		// Already out; the exit is recorded above.
	case StateRestarting:
		if t.restartIssued {
			return // the old process going away is part of the restart
		}
		// Died while a decided restart waits for its backoff: the restart
		// stays scheduled.
		t.moveTo(StateExited, "process exited: "+cause+t.restartPending(now), now)
	default: // STARTING, READY, UNHEALTHY, OUT_OF_TRAFFIC
		t.crash(cause, now)
	}
}

func (t *tracker) onStopped(ev Event, now time.Time) {
	if t.state == StateFailed {
		return // FAILED stays visible (and escalated) until the model is reloaded or unloaded
	}
	reason := "stopped"
	if ev.Reason != "" {
		reason += ": " + ev.Reason
	}
	t.stop(StateStopped, reason, now)
}

// onSuspended records a process stopped by a signal: the process check
// fails at once, which takes a live instance out of traffic at once (see
// evaluate); a stopped process cannot run a request.
func (t *tracker) onSuspended(ev Event, now time.Time) {
	if t.state == StateStopping || t.state == StateStopped || t.state == StateFailed || t.state == StateExited {
		return
	}
	msg := "stopped by a signal"
	if ev.Signal != "" {
		msg = "stopped by signal " + ev.Signal
	}
	if t.pid != 0 {
		msg += fmt.Sprintf(" (pid %d)", t.pid)
	}
	t.checks[ixProcess].force(false, msg, now, false)
	t.emit(action{kind: actCheck, key: t.key, check: CheckProcess, ok: false})
}

// onResumed records a stopped process continued: the process check passes
// again, and the instance returns to traffic by the same path as any check
// recovering (once every other check passes too).
func (t *tracker) onResumed(now time.Time) {
	c := &t.checks[ixProcess]
	if c.passing {
		return
	}
	msg := "running (continued)"
	if t.pid != 0 {
		msg = fmt.Sprintf("running (pid %d, continued)", t.pid)
	}
	c.force(true, msg, now, true)
	t.emit(action{kind: actCheck, key: t.key, check: CheckProcess, ok: true})
}

// stop takes the instance out for good (unload, shutdown, failed load).
func (t *tracker) stop(to InstanceState, reason string, now time.Time) {
	t.restartAt, t.restartCause, t.restartIssued = time.Time{}, "", false
	t.failingSince = time.Time{}
	t.moveTo(to, reason, now)
}

func (t *tracker) onCheck(ev Event, now time.Time) {
	if !t.live() {
		return // the hook never runs before initialize; no judging a process being replaced
	}
	var i int
	switch ev.Check {
	case CheckHeartbeat:
		i = ixHeartbeat
	case CheckHook:
		i = ixHook
	default:
		return // process, progress and errors are event driven
	}
	msg := ev.Reason
	if !ev.OK && msg == "" {
		msg = "failed"
		if ev.TimedOut {
			msg = "timed out"
		}
	}
	counted := ev.OK || !now.Before(t.graceUntil)
	t.checks[i].observe(ev.OK, msg, now, counted, t.pol.FailureThreshold, t.pol.SuccessThreshold)
	t.emit(action{kind: actCheck, key: t.key, check: ev.Check, ok: ev.OK, took: ev.Took})
}

func (t *tracker) onExecute(ev Event, now time.Time) {
	if !t.live() {
		return
	}
	if ev.TimedOut {
		msg := "execute ran past its limit"
		if ev.Reason != "" {
			msg += ": " + ev.Reason
		}
		t.checks[ixProgress].force(false, msg, now, false)
		t.emit(action{kind: actCheck, key: t.key, check: CheckProgress, ok: false})
		t.requestRestart(restartHang, "hang: "+msg, now)
		return
	}
	t.checks[ixProgress].force(true, "", now, true)
	t.emit(action{kind: actCheck, key: t.key, check: CheckProgress, ok: true})

	errs := &t.checks[ixErrors]
	if ev.OK {
		t.consecErrors = 0
		errs.force(true, "", now, true)
		t.emit(action{kind: actCheck, key: t.key, check: CheckErrors, ok: true})
		return
	}
	t.consecErrors++
	msg := ev.Reason
	if msg == "" {
		msg = "execute failed"
	}
	pass := errs.passing
	if p, ok := matchPattern(ev.Reason, t.pol.ErrorPatterns); ok {
		msg = fmt.Sprintf("error matches %q: %s", p, msg)
		pass = false
	} else if t.pol.ConsecutiveErrors > 0 && t.consecErrors >= t.pol.ConsecutiveErrors {
		msg = fmt.Sprintf("%d consecutive errors, last: %s", t.consecErrors, msg)
		pass = false
	}
	errs.force(false, msg, now, pass)
	t.emit(action{kind: actCheck, key: t.key, check: CheckErrors, ok: false})
}

// evaluate applies the duration thresholds to a live instance: any
// effective check failing makes it UNHEALTHY (still routable), failing
// continuously for StopTrafficThreshold takes it OUT_OF_TRAFFIC, for
// RestartThreshold restarts it; all checks passing again makes it READY.
// Durations run from the moment the first check's effective state failed.
func (t *tracker) evaluate(now time.Time) {
	if !t.live() {
		return
	}
	i, failing := t.failingCheck()
	if !failing {
		t.failingSince = time.Time{}
		if t.state != StateReady {
			t.moveTo(StateReady, "checks passing", now)
		}
		return
	}
	if t.failingSince.IsZero() {
		t.failingSince = now
	}
	c := &t.checks[i]
	why := fmt.Sprintf("check %s failing", checkName(i))
	if c.failMsg != "" {
		why += ": " + c.failMsg
	}
	failedFor := now.Sub(t.failingSince)
	switch {
	case failedFor >= t.restartAfter() && !t.noRestart:
		t.requestRestart(restartThreshold, fmt.Sprintf("check %s failing for %s: %s", checkName(i), failedFor, c.failMsg), now)
	case i == ixProcess || failedFor >= t.pol.StopTrafficThreshold || t.state == StateOutOfTraffic:
		// A stopped process leaves traffic at once, whatever the
		// stop-traffic threshold: it cannot run what it is given.
		// Out of traffic stays out until every check passes again.
		t.moveTo(StateOutOfTraffic, why, now)
	default:
		t.moveTo(StateUnhealthy, why, now)
	}
}

// failingCheck returns the first check whose effective state fails. The
// process check fails here only while the process is stopped by a signal
// (an exit is a crash, handled before any evaluation).
func (t *tracker) failingCheck() (int, bool) {
	for i := ixProcess; i < numChecks; i++ {
		if !t.checks[i].passing {
			return i, true
		}
	}
	return 0, false
}

// crash handles a process that went away or never initialized: out of
// traffic and readiness at once, then a restart per backoff.
func (t *tracker) crash(cause string, now time.Time) {
	t.failingSince = time.Time{}
	if t.noRestart || t.retired {
		t.moveTo(StateExited, "process exited: "+cause+" (server draining, no restart)", now)
		return
	}
	t.moveTo(StateExited, "process exited: "+cause, now)
	t.requestRestart(restartCrash, cause, now)
}

// restartKind says why a restart was decided; it decides whether the
// restart waits for the crash backoff.
type restartKind int

const (
	restartCrash     restartKind = iota + 1 // the process exited or initialize failed: backoff
	restartThreshold                        // a check failed for restart_threshold_seconds: backoff
	restartHang                             // the process cannot make progress: at once
)

// requestRestart decides a restart: the crash-loop breaker first, then the
// backoff delay. The first restart is issued at once; later ones wait,
// except a hang's, which is issued at once (a hung process holds requests
// and serves nobody) but still counts toward the breaker.
func (t *tracker) requestRestart(kind restartKind, cause string, now time.Time) {
	t.failingSince = time.Time{}
	if t.noRestart || t.retired {
		t.moveTo(StateOutOfTraffic, cause+" (server draining, no restart)", now)
		return
	}
	t.pruneRestartLog(now)
	if t.pol.MaxRestarts >= 0 && len(t.restartLog) >= t.pol.MaxRestarts {
		reason := fmt.Sprintf("restarts exhausted (%d within %s); last cause: %s", len(t.restartLog), t.pol.RestartWindow, cause)
		t.restartAt, t.restartCause, t.restartIssued = time.Time{}, "", false
		t.failedReason = reason
		t.moveTo(StateFailed, reason, now)
		t.emit(action{kind: actFail, key: t.key, reason: reason})
		t.retryFailed(now)
		return
	}
	t.restartLog = append(t.restartLog, now)
	t.restartCause = cause
	delay := t.backoff.next()
	if delay <= 0 || kind == restartHang {
		t.issueRestart(now)
		return
	}
	t.restartAt = now.Add(delay)
	if t.state == StateExited {
		t.reason = "process exited: " + cause + t.restartPending(now)
		return
	}
	t.moveTo(StateRestarting, cause+t.restartPending(now), now)
}

// retryFailed schedules the next retry of a FAILED instance at the maximum
// backoff, as a kubelet's CrashLoopBackOff does: liveness keeps failing
// (an orchestrator restarts the pod), but a server without one heals by
// itself once the cause goes away.
func (t *tracker) retryFailed(now time.Time) {
	t.restartIssued, t.retrying = false, false
	if t.noRestart || t.retired || t.pol.BackoffMax <= 0 {
		t.restartAt = time.Time{}
		return
	}
	t.restartAt = now.Add(t.pol.BackoffMax)
	t.moveTo(StateFailed, fmt.Sprintf("%s; next retry in %s", t.failedReason, t.pol.BackoffMax), now)
}

func (t *tracker) restartPending(now time.Time) string {
	if t.restartAt.IsZero() {
		return ""
	}
	return fmt.Sprintf("; restart in %s", t.restartAt.Sub(now))
}

// issueRestart calls Actuator.Restart; the instance waits in RESTARTING for
// its new process (InstanceSpawned).
func (t *tracker) issueRestart(now time.Time) {
	if t.state == StateFailed {
		// A retry after restarts were exhausted: the instance stays FAILED
		// until its initialize returns.
		t.restartAt = time.Time{}
		if t.noRestart || t.retired {
			return
		}
		t.restartIssued = true
		t.restarts++
		t.moveTo(StateFailed, t.failedReason+"; retrying now", now)
		t.emit(action{kind: actRestart, key: t.key, reason: "retry after restarts were exhausted: " + t.failedReason})
		return
	}
	t.restartAt = time.Time{}
	t.restartIssued = true
	t.restarts++
	t.moveTo(StateRestarting, "restarting: "+t.restartCause, now)
	t.emit(action{kind: actRestart, key: t.key, reason: t.restartCause})
}

func (t *tracker) pruneRestartLog(now time.Time) {
	if t.pol.RestartWindow <= 0 {
		return // no window: every restart since the load counts
	}
	keep := t.restartLog[:0]
	for _, at := range t.restartLog {
		if now.Sub(at) < t.pol.RestartWindow {
			keep = append(keep, at)
		}
	}
	t.restartLog = keep
}

// moveTo changes state (or only the reason, when the state is unchanged),
// records the transition and keeps the routable view in step.
func (t *tracker) moveTo(to InstanceState, reason string, now time.Time) {
	if t.state == to {
		t.reason = reason
		return
	}
	from := t.state
	if from == StateReady {
		// Leaving health: a long enough healthy stretch forgives the backoff.
		if !t.healthySince.IsZero() && now.Sub(t.healthySince) >= t.pol.BackoffReset {
			t.backoff.reset()
		}
		t.healthySince = time.Time{}
	}
	if to == StateReady {
		t.healthySince = now
	}
	t.state, t.reason, t.since = to, reason, now
	tr := Transition{At: now, From: from, To: to, Reason: reason}
	if len(t.ring) == transitionRingSize {
		copy(t.ring, t.ring[1:])
		t.ring = t.ring[:transitionRingSize-1]
	}
	t.ring = append(t.ring, tr)
	t.emit(action{kind: actTransition, key: t.key, from: string(from), to: string(to), reason: reason, restarts: t.restarts, pid: t.pid})

	if from.Routable() != to.Routable() {
		t.emit(action{kind: actSetRoutable, key: t.key, routable: to.Routable()})
	}
}

func (t *tracker) emit(a action) { t.out = append(t.out, a) }

// health is the snapshot view of the instance.
func (t *tracker) health() InstanceHealth {
	h := InstanceHealth{
		Name:         t.key.Instance,
		State:        t.state,
		Reason:       t.reason,
		Since:        t.since,
		PID:          t.pid,
		Restarts:     t.restarts,
		LastExit:     t.lastExit,
		FailingSince: t.failingSince,
		RestartAt:    t.restartAt,
		Sequences:    t.sequences,
		Checks:       make([]CheckHealth, numChecks),
		Transitions:  append([]Transition(nil), t.ring...),
	}
	for i := range t.checks {
		h.Checks[i] = t.checks[i].health(checkName(i))
	}
	return h
}

// exitString says how a process ended: "signal killed" or "exit code 1".
func exitString(ev Event) string {
	if ev.Signal != "" {
		return "signal " + ev.Signal
	}
	return fmt.Sprintf("exit code %d", ev.ExitCode)
}

// matchPattern reports the first of patterns that msg contains, ignoring
// case ("CUDA error" matches "RuntimeError: CUDA Error: device-side assert").
func matchPattern(msg string, patterns []string) (string, bool) {
	if msg == "" {
		return "", false
	}
	lower := strings.ToLower(msg)
	for _, p := range patterns {
		if p != "" && strings.Contains(lower, strings.ToLower(p)) {
			return p, true
		}
	}
	return "", false
}
