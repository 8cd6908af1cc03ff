package health

import (
	"strings"
	"testing"
)

// A FAILED instance of a model that still serves on its other instance
// fails liveness (escalation) but not readiness: the model is degraded, and
// readiness answers whether the server should get traffic.
func TestFailedInstanceOfAServingModelFailsLivenessNotReadiness(t *testing.T) {
	h := newHarness(t)
	p := testPolicy(func(p *Policy) { p.MaxRestarts = 1 })
	h.run([]step{
		at(0, loading(p, "m_0", "m_1"), StateStarting),
		at(0, spawned(100), StateStarting),
		at(0, initialized(), StateReady, "routable"),
		{at: 0, ev: ptr(spawned(200).on("m_1")), inst: "m_1"},
		{at: 0, ev: ptr(initialized().on("m_1")), inst: "m_1", state: StateReady},
		at(0, modelEv(ModelLoaded), StateReady),
		at(1*s, exited(1), StateRestarting, "unroutable", "restart"),
		at(1*s, spawned(101), StateStarting),
		at(2*s, exited(1), StateFailed, "fail"),
	})
	h.post(Event{Kind: StartupComplete})
	snap := h.snapshot()
	if live, why := snap.Live(); live || !strings.Contains(why, "restarts exhausted") {
		t.Fatalf("Live() = %v, %q; want false (escalation)", live, why)
	}
	if ready, why := snap.Ready(); !ready {
		t.Fatalf("Ready() = false (%s); want true: m serves on m_1", why)
	}
	m, _ := snap.Model(testModel, testVersion)
	if !m.Ready || !m.Degraded {
		t.Fatalf("model %+v, want ready and degraded", m)
	}
}

func ptr(e Event) *Event { return &e }
