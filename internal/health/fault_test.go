package health

import (
	"strings"
	"testing"
	"time"
)

func suspended(sig string) Event { e := ev(InstanceSuspended); e.Signal = sig; return e }
func resumed() Event             { return ev(InstanceResumed) }

// A stopped process leaves traffic at the event, whatever the stop-traffic
// threshold, and comes back by the same path when it is continued.
func TestSuspendedInstanceLeavesTrafficAtOnce(t *testing.T) {
	h := newHarness(t)
	p := testPolicy(func(p *Policy) { p.StopTrafficThreshold, p.RestartThreshold = 4*s, 30*s })
	h.run(append(started(p),
		at(1*s, suspended("SIGSTOP"), StateOutOfTraffic, "unroutable"),
		at(2*s, resumed(), StateReady, "routable"),
		at(3*s, suspended("SIGSTOP"), StateOutOfTraffic, "unroutable"),
	))
	m, _ := h.snapshot().Model(testModel, testVersion)
	if m.Ready {
		t.Fatalf("model ready with its only instance stopped: %+v", m)
	}
	if !strings.Contains(m.Instances[0].Reason, "stopped by signal SIGSTOP") {
		t.Fatalf("reason %q does not say the process is stopped", m.Instances[0].Reason)
	}
	// A stop that lasts is a failure like any other: restarted after the
	// restart threshold.
	h.run([]step{tickAt(33*s, StateRestarting, "restart")})
}

// A hang's restart does not wait for the crash backoff (the backoff of an
// earlier crash would otherwise delay it), but it counts for the breaker.
func TestHangRestartsAtOnceDespiteBackoff(t *testing.T) {
	h := newHarness(t)
	p := testPolicy(func(p *Policy) { p.BackoffInitial, p.BackoffMax, p.MaxRestarts = 10*s, 60*s, 2 })
	h.run(append(started(p),
		at(1*s, exited(1), StateRestarting, "unroutable", "restart"), // first restart: at once
		at(1*s, spawned(101), StateStarting),
		at(1*s, initialized(), StateReady, "routable"),
		at(2*s, execTimeout(), StateRestarting, "unroutable", "restart"), // backoff would be 10 s
		at(2*s, spawned(102), StateStarting),
		at(2*s, initialized(), StateReady, "routable"),
		at(3*s, execTimeout(), StateFailed, "unroutable", "fail"), // breaker: 2 within the window
	))
}

// The wording of an initialize failure follows its typed cause.
func TestInitFailureWordingFollowsCause(t *testing.T) {
	for _, c := range []struct {
		cause  Cause
		reason string
		want   string
	}{
		{CauseModelRaised, "initialize raised ValueError: bad", "process exited: initialize raised ValueError: bad"},
		{CauseHang, "initialize hung: the stub did not answer a ping within 2s", "process exited: initialize hung: the stub did not answer a ping within 2s"},
		{CauseUnspecified, "initialize something", "initialize failed: initialize something"},
	} {
		h := newHarness(t)
		h.run([]step{
			at(0, loading(testPolicy(nil)), StateStarting),
			at(0, modelEv(ModelLoaded), StateStarting),
		})
		e := initFailed(c.reason)
		e.Cause = c.cause
		h.post(spawned(100))
		h.post(e)
		tr := h.instance("m_0")
		found := false
		for _, x := range tr.ring {
			if strings.Contains(x.Reason, c.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("cause %d: transitions %+v, want one saying %q", c.cause, tr.ring, c.want)
		}
	}
}

// FAILED keeps trying at the maximum backoff, as CrashLoopBackOff does:
// liveness fails meanwhile, and the instance heals once a retry initializes.
func TestFailedInstanceIsRetriedAtMaxBackoff(t *testing.T) {
	h := newHarness(t)
	p := testPolicy(func(p *Policy) { p.MaxRestarts, p.BackoffInitial, p.BackoffMax = 1, s, time.Minute })
	h.run(append(started(p),
		at(0, exited(1), StateRestarting, "unroutable", "restart"),
		at(0, spawned(101), StateStarting),
		at(1*s, exited(1), StateFailed, "fail"),
		tickAt(1*s+time.Minute-time.Millisecond, StateFailed, []string{}...),
		tickAt(1*s+time.Minute, StateFailed, "restart"),
		at(1*s+time.Minute, spawned(102), StateFailed),
		at(2*s+time.Minute, initFailed("still broken"), StateFailed),
		tickAt(2*s+2*time.Minute, StateFailed, "restart"),
		at(2*s+2*time.Minute, spawned(103), StateFailed),
	))
	if live, why := h.snapshot().Live(); live || !strings.Contains(why, "restarts exhausted") {
		t.Fatalf("Live() = %v, %q while a retry runs; want false", live, why)
	}
	h.run([]step{at(3*s+2*time.Minute, initialized(), StateReady, "routable")})
	if live, why := h.snapshot().Live(); !live {
		t.Fatalf("Live() = false (%s) after the retry healed the instance", why)
	}
	// Unloading ends the retries.
	h.run([]step{
		at(4*s+2*time.Minute, exited(1), StateFailed, "unroutable", "fail"), // the breaker still remembers
		at(5*s+2*time.Minute, modelEv(ModelUnloading), StateStopping),
		tickAt(time.Hour, StateStopping, []string{}...),
	})
}
