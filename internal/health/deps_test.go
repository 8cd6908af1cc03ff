package health

import (
	"strings"
	"testing"
)

// loadedModel builds the events of version 1 of a one-instance model named
// name (no instances of its own when it has deps: an ensemble).
func loadedModel(c *core, name string, deps ...Dependency) { loadedVersion(c, name, "1", deps...) }

func loadedVersion(c *core, name, version string, deps ...Dependency) {
	key := InstanceKey{Model: name, Version: version}
	p := DefaultPolicy()
	var instances []string
	if len(deps) == 0 {
		instances = []string{name + "_0"}
	}
	c.step(Event{Kind: ModelLoading, Instance: key, Instances: instances, Policy: &p, Expected: true, Deps: deps}, t0)
	for _, in := range instances {
		ik := key
		ik.Instance = in
		c.step(Event{Kind: InstanceSpawned, Instance: ik, PID: 1}, t0)
		c.step(Event{Kind: InstanceInitialized, Instance: ik, PID: 1}, t0)
	}
	c.step(Event{Kind: ModelLoaded, Instance: key}, t0)
}

func modelHealth(t *testing.T, c *core, name string) ModelHealth {
	t.Helper()
	for _, m := range c.snapshot(t0).Models {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no model %s in the snapshot", name)
	return ModelHealth{}
}

func transitionsOf(acts []action, model string) []action {
	var out []action
	for _, a := range acts {
		if a.kind == actModelTransition && a.key.Model == model {
			out = append(out, a)
		}
	}
	return out
}

func TestEnsembleReadinessFollowsItsSteps(t *testing.T) {
	c := newCore(false, false)
	loadedModel(c, "pre")
	loadedModel(c, "post")
	loadedModel(c, "ens", Dependency{Model: "pre", Label: "step"}, Dependency{Model: "post", Label: "step"})
	if h := modelHealth(t, c, "ens"); !h.Ready || h.State != ModelStateReady {
		t.Fatalf("ens = %s ready=%v (%s), want READY with both steps ready", h.State, h.Ready, h.Reason)
	}

	// A step's instance dies: the ensemble leaves readiness at once, with
	// the step's own reason, and the change is a transition of its own.
	acts := c.step(Event{Kind: InstanceExited, Instance: InstanceKey{Model: "pre", Version: "1", Instance: "pre_0"}, Signal: "SIGKILL", PID: 1}, t0)
	h := modelHealth(t, c, "ens")
	if h.Ready || h.State != ModelStateUnavailable || !strings.HasPrefix(h.Reason, "step pre: 0 of 1 instances routable") || !strings.Contains(h.Reason, "pre_0 is") {
		t.Fatalf("ens = %s ready=%v reason %q, want UNAVAILABLE naming step pre and its reason", h.State, h.Ready, h.Reason)
	}
	if tr := transitionsOf(acts, "ens"); len(tr) != 1 || tr[0].routable || !strings.HasPrefix(tr[0].reason, "step pre:") {
		t.Fatalf("transitions of ens = %+v, want one to not ready naming step pre", tr)
	}
	if ok, _, _ := c.snapshot(t0).ModelReady("ens", ""); ok {
		t.Error("ModelReady(ens) is true while a step is down")
	}

	// The step comes back: so does the ensemble.
	pre := InstanceKey{Model: "pre", Version: "1", Instance: "pre_0"}
	c.step(Event{Kind: InstanceSpawned, Instance: pre, PID: 2}, t0)
	acts = c.step(Event{Kind: InstanceInitialized, Instance: pre, PID: 2}, t0)
	if h := modelHealth(t, c, "ens"); !h.Ready {
		t.Fatalf("ens not ready after its step recovered: %s", h.Reason)
	}
	if tr := transitionsOf(acts, "ens"); len(tr) != 1 || !tr[0].routable {
		t.Fatalf("transitions of ens = %+v, want one back to ready", tr)
	}
}

func TestDependencyNotLoadedAndNested(t *testing.T) {
	c := newCore(false, false)
	loadedModel(c, "bls", Dependency{Model: "missing", Label: "dependency"})
	if h := modelHealth(t, c, "bls"); h.Ready || h.Reason != "dependency missing: it is not loaded" {
		t.Fatalf("bls = ready=%v reason %q", h.Ready, h.Reason)
	}
	// An ensemble of an ensemble names the chain.
	loadedModel(c, "inner", Dependency{Model: "bls", Label: "step"})
	loadedModel(c, "outer", Dependency{Model: "inner", Label: "step"})
	if h := modelHealth(t, c, "outer"); h.Ready || h.Reason != "step inner: step bls: dependency missing: it is not loaded" {
		t.Fatalf("outer reason %q", h.Reason)
	}
	// A cycle of declarations does not loop.
	loadedModel(c, "a", Dependency{Model: "b", Label: "dependency"})
	loadedModel(c, "b", Dependency{Model: "a", Label: "dependency"})
	if h := modelHealth(t, c, "a"); !h.Ready {
		t.Fatalf("a = %q, want ready (its cycle partner is)", h.Reason)
	}
}

// A step named without a version follows the version a request without one
// runs on (defaultRank), not merely the highest loaded version.
func TestVersionlessStepFollowsTheVersionRequestsRunOn(t *testing.T) {
	c := newCore(false, false)
	loadedVersion(c, "step", "1")
	loadedVersion(c, "step", "2")
	loadedModel(c, "ens", Dependency{Model: "step", Label: "step"})

	// Version 2's only instance dies: versionless requests run on version 1,
	// so the ensemble stays ready.
	c.step(Event{Kind: InstanceExited, Instance: InstanceKey{Model: "step", Version: "2", Instance: "step_0"}, Signal: "SIGKILL", PID: 1}, t0)
	snap := c.snapshot(t0)
	if m, ok := snap.Model("step", ""); !ok || m.Version != "1" || !m.Ready {
		t.Fatalf("versionless step = %+v, want version 1, ready", m)
	}
	if h := modelHealth(t, c, "ens"); !h.Ready {
		t.Fatalf("ens not ready while step version 1 serves versionless requests: %s", h.Reason)
	}

	// Version 1 dies too: no version serves, and the reason names the step.
	acts := c.step(Event{Kind: InstanceExited, Instance: InstanceKey{Model: "step", Version: "1", Instance: "step_0"}, Signal: "SIGKILL", PID: 1}, t0)
	if h := modelHealth(t, c, "ens"); h.Ready || !strings.HasPrefix(h.Reason, "step step: ") {
		t.Fatalf("ens = ready=%v reason %q, want not ready naming the step", h.Ready, h.Reason)
	}
	if tr := transitionsOf(acts, "ens"); len(tr) != 1 || tr[0].routable {
		t.Fatalf("transitions of ens = %+v, want one to not ready", tr)
	}
}
