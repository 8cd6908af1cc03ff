package health

import "testing"

// A reload replaces instances one set for another while the version stays
// READY: new instances join by spawning under new names, old ones stop and
// are removed, and readiness never drops.
func TestReloadReplacesInstancesWithoutLosingReadiness(t *testing.T) {
	h := newHarness(t)
	h.post(loading(testPolicy(nil), "m_0"))
	h.post(spawned(10))
	h.post(initialized())
	h.post(modelEv(ModelLoaded))
	if ok, r, _ := h.snapshot().ModelReady(testModel, testVersion); !ok {
		t.Fatalf("not ready before the reload: %s", r)
	}
	h.post(spawned(20).on("m_0-r2"))
	h.post(initialized().on("m_0-r2"))
	h.post(stopped())
	if ok, r, _ := h.snapshot().ModelReady(testModel, testVersion); !ok {
		t.Fatalf("not ready while replacing: %s", r)
	}
	h.post(ev(InstanceRemoved))
	m, _ := h.snapshot().Model(testModel, testVersion)
	if len(m.Instances) != 1 || m.Instances[0].Name != "m_0-r2" {
		t.Fatalf("instances after removal: %+v", m.Instances)
	}
	if !m.Ready || m.Degraded {
		t.Errorf("ready %v degraded %v, want ready and not degraded", m.Ready, m.Degraded)
	}
}

func TestStartupProgressCountsPlannedModels(t *testing.T) {
	h := newHarness(t)
	h.post(Event{Kind: StartupPlanned, Instances: []string{"a", "m"}})
	if got, want := h.snapshot().Loading, "loading 1/2: a"; got != want {
		t.Fatalf("before any load: %q, want %q", got, want)
	}
	h.post(loading(testPolicy(nil), "m_0"))
	h.post(spawned(1))
	h.post(initialized())
	h.post(modelEv(ModelLoaded))
	if got, want := h.snapshot().Loading, "loading 2/2: a"; got != want {
		t.Fatalf("after m loaded: %q, want %q", got, want)
	}
}

func TestVersionlessModelFollowsTheReadyVersion(t *testing.T) {
	s := &Snapshot{Models: []ModelHealth{
		{Name: "m", Version: "1", State: ModelStateReady, Ready: true, Expected: true},
		{Name: "m", Version: "2", State: ModelStateLoading},
		{Name: "m", Version: "10", State: ModelStateUnavailable, Reason: "initialize raised"},
	}}
	if m, _ := s.Model("m", ""); m.Version != "1" {
		t.Errorf("versionless model = version %s, want the ready 1", m.Version)
	}
	if ok, _, _ := s.ModelReady("m", ""); !ok {
		t.Error("versionless readiness must follow the ready version")
	}
	s.Models[0].Ready = false
	s.Models[2].Expected = true
	if m, _ := s.Model("m", ""); m.Version != "10" {
		t.Errorf("with none ready: version %s, want the highest expected (10)", m.Version)
	}
}
