package health

import (
	"slices"
	"testing"
	"time"
)

func TestBackoffSequence(t *testing.T) {
	b := backoff{initial: time.Second, max: 10 * time.Second}
	var got []time.Duration
	for range 7 {
		got = append(got, b.next())
	}
	want := []time.Duration{0, 1 * s, 2 * s, 4 * s, 8 * s, 10 * s, 10 * s}
	if !slices.Equal(got, want) {
		t.Fatalf("sequence = %v, want %v", got, want)
	}
	b.reset()
	if got := b.next(); got != 0 {
		t.Fatalf("after reset next = %v, want 0", got)
	}
}

func TestBackoffDefaultCap(t *testing.T) {
	p := DefaultPolicy()
	b := backoff{initial: p.BackoffInitial, max: p.BackoffMax}
	var last time.Duration
	for range 100 { // must not overflow however long the crash loop
		last = b.next()
	}
	if last != 5*time.Minute {
		t.Fatalf("capped delay = %v, want 5m", last)
	}
}

// TestTrackerBackoffTimings checks the real restart times of a crash loop:
// immediate, then 1s, 2s, 4s capped at 4s.
func TestTrackerBackoffTimings(t *testing.T) {
	h := newHarness(t)
	pol := testPolicy(func(p *Policy) {
		p.BackoffInitial, p.BackoffMax, p.MaxRestarts = s, 4*s, -1 // no breaker
	})
	h.run(started(pol))
	var restarts []time.Duration
	pid := 100
	for range 6 {
		h.post(exited(1))
		for h.instance("m_0").state != StateRestarting {
			next := h.c.nextDeadline()
			if next.IsZero() {
				t.Fatal("no restart scheduled")
			}
			h.advance(next.Sub(t0))
		}
		restarts = append(restarts, h.now.Sub(t0))
		pid++
		h.post(spawned(pid))
		h.post(initialized())
	}
	want := []time.Duration{0, 1 * s, 3 * s, 7 * s, 11 * s, 15 * s}
	if !slices.Equal(restarts, want) {
		t.Fatalf("restart times = %v, want %v", restarts, want)
	}
}

// TestTrackerBackoffReset checks that a healthy stretch of BackoffReset
// makes the next restart immediate again, while a shorter one does not.
func TestTrackerBackoffReset(t *testing.T) {
	pol := testPolicy(func(p *Policy) {
		p.BackoffInitial, p.BackoffReset, p.MaxRestarts = s, 10*time.Minute, -1
	})
	h := newHarness(t)
	h.run(append(started(pol),
		at(0, exited(1), StateRestarting, "unroutable", "restart"), // immediate
		at(0, spawned(101), StateStarting),
		at(0, initialized(), StateReady, "routable"),
		at(5*time.Minute, exited(1), StateExited, "unroutable"), // healthy only 5m: waits 1s
		tickAt(5*time.Minute+s, StateRestarting, "restart"),
		at(5*time.Minute+s, spawned(102), StateStarting),
		at(5*time.Minute+s, initialized(), StateReady, "routable"),
		at(15*time.Minute+s, exited(1), StateRestarting, "unroutable", "restart"), // healthy 10m: immediate again
	))
}

func TestPartialInstanceLoss(t *testing.T) {
	pol := testPolicy(nil)
	h := newHarness(t)
	h.post(loading(pol, "m_0", "m_1"))
	for i, name := range []string{"m_0", "m_1"} {
		h.post(spawned(100 + i).on(name))
		h.post(initialized().on(name))
	}
	h.post(modelEv(ModelLoaded))
	h.post(Event{Kind: StartupComplete})
	m := h.snapshot().Models[0]
	if !m.Ready || m.Degraded || m.Routable() != 2 {
		t.Fatalf("model = %+v, want ready, not degraded", m)
	}
	acts := h.post(signaled("killed", 101).on("m_1"))
	if got := actuatorCalls(acts); !slices.Equal(got, []string{"unroutable", "restart"}) {
		t.Fatalf("actuator calls = %q", got)
	}
	snap := h.snapshot()
	m = snap.Models[0]
	if !m.Ready || !m.Degraded || m.Routable() != 1 {
		t.Fatalf("model = %+v, want ready and degraded", m)
	}
	if ok, _ := snap.Ready(); !ok {
		t.Fatal("server must stay ready with a degraded model")
	}
	var warned bool
	for _, c := range snap.Checks(ProbeReady) {
		if c.Name == "model/m/1" && c.OK && c.Reason == "degraded: 1 of 2 instances routable" {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("readyz checks lack the degraded warning: %+v", snap.Checks(ProbeReady))
	}
	if in := m.Instances[1]; in.LastExit != "signal killed" || in.State != StateRestarting {
		t.Fatalf("instance = %+v", in)
	}

	// With min_ready_instances 2 the same loss makes the model not ready.
	h = newHarness(t)
	h.post(loading(testPolicy(func(p *Policy) { p.MinReadyInstances = 2 }), "m_0", "m_1"))
	for i, name := range []string{"m_0", "m_1"} {
		h.post(spawned(100 + i).on(name))
		h.post(initialized().on(name))
	}
	h.post(modelEv(ModelLoaded))
	h.post(exited(1).on("m_1"))
	if ready, why, _ := h.snapshot().ModelReady(testModel, testVersion); ready || why == "" {
		t.Fatalf("ModelReady = %v %q, want not ready with a reason", ready, why)
	}
}

func TestAllInstancesFailedMakesModelUnavailable(t *testing.T) {
	h := newHarness(t)
	h.post(loading(testPolicy(func(p *Policy) { p.MaxRestarts = 0 }), "m_0", "m_1"))
	for i, name := range []string{"m_0", "m_1"} {
		h.post(spawned(100 + i).on(name))
		h.post(initialized().on(name))
	}
	h.post(modelEv(ModelLoaded))
	h.post(exited(1).on("m_0"))
	if m := h.snapshot().Models[0]; m.State != ModelStateReady || !m.Ready {
		t.Fatalf("one FAILED of two: model = %+v, want READY", m)
	}
	h.post(exited(2).on("m_1"))
	m := h.snapshot().Models[0]
	if m.State != ModelStateUnavailable || m.Ready {
		t.Fatalf("model = %+v, want UNAVAILABLE", m)
	}
	// Unloading a model ends the escalation of its FAILED instances.
	h.post(modelEv(ModelUnloading))
	h.post(modelEv(ModelUnloaded))
	if live, why := h.snapshot().Live(); !live {
		t.Fatalf("after unload Live() = false: %s", why)
	}
}

func TestTransitionRingIsBounded(t *testing.T) {
	h := newHarness(t)
	h.run(started(testPolicy(func(p *Policy) { p.StopTrafficThreshold = time.Hour; p.RestartThreshold = time.Hour })))
	for i := range 40 {
		h.post(hook(i%2 == 0))
	}
	tr := h.snapshot().Models[0].Instances[0].Transitions
	if len(tr) != transitionRingSize {
		t.Fatalf("len = %d, want %d", len(tr), transitionRingSize)
	}
	last := tr[len(tr)-1]
	if last.From != StateReady || last.To != StateUnhealthy {
		t.Fatalf("last transition = %+v", last)
	}
}

func TestRawResultNextToEffective(t *testing.T) {
	h := newHarness(t)
	h.run(started(testPolicy(func(p *Policy) { p.FailureThreshold = 3 })))
	h.post(hook(true))
	h.post(hook(false))
	h.post(hook(false))
	c := h.snapshot().Models[0].Instances[0].Checks[ixHook]
	if !c.Passing || c.LastOK || c.Consecutive != 2 || c.LastMessage != "is_healthy returned False" {
		t.Fatalf("hook = %+v: want effective passing, raw failing twice", c)
	}
}

func TestEventsForUnknownTargetsAreIgnored(t *testing.T) {
	h := newHarness(t)
	if acts := h.post(exited(1)); len(acts) != 0 {
		t.Fatalf("unknown model: %v", acts)
	}
	h.post(loading(testPolicy(nil)))
	if acts := h.post(exited(1).on("nope")); len(acts) != 0 {
		t.Fatalf("unknown instance: %v", acts)
	}
	// A spawn of an instance the manager did not list adds it.
	h.post(spawned(7).on("m_9"))
	if h.instance("m_9") == nil {
		t.Fatal("spawned instance not tracked")
	}
}

func TestLoadingProgress(t *testing.T) {
	h := newHarness(t)
	p := testPolicy(nil)
	h.post(loading(p))
	e := loading(p)
	e.Instance.Model = "z"
	h.post(e)
	if got := h.snapshot().Loading; got != "loading 1/2: m" {
		t.Fatalf("Loading = %q", got)
	}
	h.post(Event{Kind: StartupComplete})
	if s := h.snapshot(); !s.Started || s.Loading != "" {
		t.Fatalf("after startup: %+v", s)
	}
}
