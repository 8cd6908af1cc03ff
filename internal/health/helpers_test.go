package health

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	testModel   = "m"
	testVersion = "1"
)

func ikey(inst string) InstanceKey {
	return InstanceKey{Model: testModel, Version: testVersion, Instance: inst}
}

// Event constructors for instance "m_0" (or another via .on).
func ev(kind EventKind) Event { return Event{Kind: kind, Instance: ikey("m_0")} }

func loading(p Policy, instances ...string) Event {
	if len(instances) == 0 {
		instances = []string{"m_0"}
	}
	return Event{Kind: ModelLoading, Instance: ikey(""), Instances: instances, Policy: &p, Expected: true}
}
func modelEv(kind EventKind) Event { return Event{Kind: kind, Instance: ikey("")} }
func spawned(pid int) Event        { e := ev(InstanceSpawned); e.PID = pid; return e }
func initialized() Event           { return ev(InstanceInitialized) }
func initFailed(r string) Event    { e := ev(InstanceInitFailed); e.Reason = r; return e }
func exited(code int) Event        { e := ev(InstanceExited); e.ExitCode = code; return e }
func signaled(sig string, pid int) Event {
	e := ev(InstanceExited)
	e.Signal, e.PID = sig, pid
	return e
}
func stopped() Event { return ev(InstanceStopped) }
func hook(ok bool) Event {
	e := ev(CheckResult)
	e.Check, e.OK = CheckHook, ok
	if !ok {
		e.Reason = "is_healthy returned False"
	}
	return e
}
func hookTimeout() Event {
	e := ev(CheckResult)
	e.Check, e.TimedOut = CheckHook, true
	return e
}
func heartbeat(ok bool) Event {
	e := ev(CheckResult)
	e.Check, e.OK, e.TimedOut = CheckHeartbeat, ok, !ok
	return e
}
func exec(ok bool, reason string) Event {
	e := ev(ExecuteResult)
	e.OK, e.Reason = ok, reason
	return e
}
func execTimeout() Event {
	e := ev(ExecuteResult)
	e.TimedOut, e.Reason = true, "batch ran 30s"
	return e
}
func (e Event) on(inst string) Event { e.Instance.Instance = inst; return e }

// testPolicy is DefaultPolicy with knobs a test can override.
func testPolicy(mod func(*Policy)) Policy {
	p := DefaultPolicy()
	if mod != nil {
		mod(&p)
	}
	return p
}

// step is one row of a scenario: at `at` after t0, run the timers that are
// due, then apply ev (if any), then compare.
type step struct {
	at    time.Duration
	ev    *Event
	state InstanceState // expected state of inst (default m_0); "" skips
	inst  string
	acts  []string // expected actuator calls ("routable", "unroutable", "restart", "fail"); nil skips
}

func at(d time.Duration, e Event, state InstanceState, acts ...string) step {
	return step{at: d, ev: &e, state: state, acts: nonNil(acts)}
}

func tickAt(d time.Duration, state InstanceState, acts ...string) step {
	return step{at: d, state: state, acts: nonNil(acts)}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// harness drives a core like the engine's loop does, without goroutines.
type harness struct {
	t      *testing.T
	c      *core
	now    time.Time
	ticked bool
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, c: newCore(true, true), now: t0}
}

// advance runs every deadline up to d (as the loop's timer would) and
// returns the actions.
func (h *harness) advance(d time.Duration) []action {
	target := t0.Add(d)
	var out []action
	for range 10000 {
		next := h.c.nextDeadline()
		if next.IsZero() || next.After(target) {
			break
		}
		if !next.After(h.now) && len(out) > 0 && h.ticked {
			h.t.Fatalf("deadline %s not cleared by tick at %s", next, h.now)
		}
		if next.Before(h.now) {
			next = h.now
		}
		h.now = next
		h.ticked = true
		out = append(out, h.c.tick(h.now)...)
	}
	h.ticked = false
	if target.After(h.now) {
		h.now = target
	}
	return append(out, h.c.tick(h.now)...)
}

func (h *harness) post(e Event) []action { return h.c.step(e, h.now) }

func (h *harness) instance(name string) *tracker {
	return h.c.models[ModelKey{testModel, testVersion}].instances[name]
}

func (h *harness) snapshot() *Snapshot { return h.c.snapshot(h.now) }

func (h *harness) run(steps []step) {
	h.t.Helper()
	for i, s := range steps {
		acts := h.advance(s.at)
		if s.ev != nil {
			acts = append(acts, h.post(*s.ev)...)
		}
		inst := s.inst
		if inst == "" {
			inst = "m_0"
		}
		tr := h.instance(inst)
		if s.state != "" && tr.state != s.state {
			h.t.Fatalf("step %d (t=%s): %s state = %s (%s), want %s", i, s.at, inst, tr.state, tr.reason, s.state)
		}
		if s.acts != nil {
			if got := actuatorCalls(acts); !slices.Equal(got, s.acts) {
				h.t.Fatalf("step %d (t=%s): actuator calls = %q, want %q (state %s: %s)", i, s.at, got, s.acts, tr.state, tr.reason)
			}
		}
	}
}

func actuatorCalls(acts []action) []string {
	out := []string{}
	for _, a := range acts {
		switch a.kind {
		case actSetRoutable, actRestart, actFail:
			out = append(out, a.String())
		}
	}
	return out
}
