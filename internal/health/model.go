package health

import (
	"fmt"
	"slices"
	"time"
)

// modelTracker is one model version: its lifecycle state from the model
// manager's events and its instances' trackers. Its readiness is derived:
//
//   - LOADING (ModelLoading), READY (ModelLoaded), UNLOADING (ModelUnloading),
//     UNAVAILABLE + reason (ModelLoadFailed; ModelUnloaded with "unloaded").
//   - Ready is state READY and at least MinReadyInstances routable instances
//     (clamped to 1..number of instances).
//   - Degraded is ready with fewer than all instances routable.
//   - A READY version whose instances are all FAILED is shown UNAVAILABLE
//     with the instances' reason: in-server recovery is exhausted.
type modelTracker struct {
	key       ModelKey
	lifecycle ModelState
	reason    string
	expected  bool
	pol       Policy
	order     []string // instance names, in the order the manager gave them
	instances map[string]*tracker
	// deps are the models this version's readiness follows; a version
	// with deps and no instances (an ensemble) is ready on its lifecycle
	// and its deps alone.
	deps []Dependency

	// Last reported view, to log model transitions once.
	shownState ModelState
	shownReady bool
}

func newModelTracker(ev Event, now time.Time) *modelTracker {
	pol := DefaultPolicy()
	if ev.Policy != nil {
		pol = *ev.Policy
	}
	m := &modelTracker{
		key:        ModelKey{Model: ev.Instance.Model, Version: ev.Instance.Version},
		lifecycle:  ModelStateLoading,
		expected:   ev.Expected,
		pol:        pol,
		instances:  map[string]*tracker{},
		shownState: ModelStateLoading,
		deps:       append([]Dependency(nil), ev.Deps...),
	}
	for _, name := range ev.Instances {
		m.addInstance(name, now)
	}
	return m
}

func (m *modelTracker) addInstance(name string, now time.Time) *tracker {
	if t, ok := m.instances[name]; ok {
		return t
	}
	t := newTracker(InstanceKey{Model: m.key.Model, Version: m.key.Version, Instance: name}, m.pol, now)
	m.instances[name] = t
	m.order = append(m.order, name)
	return t
}

// removeInstance forgets an instance; its process has been stopped.
func (m *modelTracker) removeInstance(name string) {
	if _, ok := m.instances[name]; !ok {
		return
	}
	delete(m.instances, name)
	for i, n := range m.order {
		if n == name {
			m.order = append(m.order[:i:i], m.order[i+1:]...)
			break
		}
	}
}

// step applies a lifecycle event of this version.
func (m *modelTracker) step(ev Event, now time.Time) []action {
	var out []action
	// stopAll retires every instance: it is never started or restarted
	// again, and a FAILED one stops counting toward liveness.
	stopAll := func(to InstanceState, reason string) {
		for _, name := range m.order {
			t := m.instances[name]
			t.retired = true
			if t.state == to || t.state == StateStopped {
				continue
			}
			t.out = nil
			t.stop(to, reason, now)
			out = append(out, t.out...)
		}
	}
	switch ev.Kind {
	case ModelLoaded:
		// A loaded version should be served from now on: strict readiness
		// counts it even if its load was not expected (a reload's new
		// version).
		m.lifecycle, m.reason, m.expected = ModelStateReady, "", true
	case ModelLoadFailed:
		m.lifecycle, m.reason = ModelStateUnavailable, ev.Reason
		if m.reason == "" {
			m.reason = "load failed"
		}
		// Nothing restarts the instances of a failed load. A failed load
		// is the version's UNAVAILABLE state, as in Triton, never a
		// liveness escalation: that is for versions that had loaded.
		stopAll(StateStopped, "load failed: "+m.reason)
	case ModelUnloading:
		m.lifecycle, m.reason, m.expected = ModelStateUnloading, ev.Reason, false
		// An explicit unload also ends a FAILED instance's escalation.
		stopAll(StateStopping, "unloading")
	case ModelUnloaded:
		m.lifecycle, m.reason, m.expected = ModelStateUnavailable, ev.Reason, false
		if m.reason == "" {
			m.reason = "unloaded"
		}
		stopAll(StateStopped, "unloaded")
	}
	return out
}

// depState is what a version's dependencies say: ok, or the reason of the
// first that is not ready ("step preprocess: 0 of 1 instances routable; …").
type depState struct {
	ok     bool
	reason string
}

var depsOK = depState{ok: true}

// view derives the version's reported state and readiness, given its
// dependencies' state.
func (m *modelTracker) view(d depState) (state ModelState, reason string, ready, degraded bool, routable, minReady int) {
	state, reason = m.lifecycle, m.reason
	failed := 0
	var firstFailed *tracker
	for _, name := range m.order {
		t := m.instances[name]
		if t.state.Routable() {
			routable++
		}
		if t.state == StateFailed {
			failed++
			if firstFailed == nil {
				firstFailed = t
			}
		}
	}
	n := len(m.order)
	minReady = min(max(m.pol.MinReadyInstances, 1), max(n, 1))
	if state == ModelStateReady && n > 0 && failed == n {
		state = ModelStateUnavailable
		reason = fmt.Sprintf("all instances failed; %s: %s", firstFailed.key.Instance, firstFailed.reason)
	}
	if n == 0 && len(m.deps) > 0 {
		minReady = 0 // nothing of its own to route to
	}
	ready = state == ModelStateReady && routable >= minReady
	degraded = ready && routable < n
	if ready && !d.ok {
		// Loaded and routable, but something it needs is not ready.
		return ModelStateUnavailable, d.reason, false, false, routable, minReady
	}
	if state == ModelStateReady && !ready {
		// Loaded, but not enough instances in traffic: report what the
		// index reports, with the first instance that is out.
		state = ModelStateUnavailable
		reason = fmt.Sprintf("%d of %d instances routable, needs %d", routable, n, minReady)
		for _, name := range m.order {
			if t := m.instances[name]; !t.state.Routable() {
				reason += fmt.Sprintf("; %s is %s", name, t.state)
				if t.reason != "" {
					reason += ": " + t.reason
				}
				break
			}
		}
	}
	return state, reason, ready, degraded, routable, minReady
}

// observe emits a model transition when the reported state or readiness
// changed since the last call.
func (m *modelTracker) observe(d depState) []action {
	state, reason, ready, _, _, _ := m.view(d)
	if state == m.shownState && ready == m.shownReady {
		return nil
	}
	a := action{
		kind:     actModelTransition,
		key:      InstanceKey{Model: m.key.Model, Version: m.key.Version},
		from:     string(m.shownState),
		to:       string(state),
		routable: ready,
		reason:   reason,
	}
	m.shownState, m.shownReady = state, ready
	return []action{a}
}

// health is the snapshot view of the version.
func (m *modelTracker) health(d depState) ModelHealth {
	state, reason, ready, degraded, _, minReady := m.view(d)
	h := ModelHealth{
		Name:      m.key.Model,
		Version:   m.key.Version,
		State:     state,
		Reason:    reason,
		Ready:     ready,
		Degraded:  degraded,
		MinReady:  minReady,
		Expected:  m.expected,
		Instances: make([]InstanceHealth, 0, len(m.order)),
	}
	h.DependsOn = slices.Clone(m.deps)
	for _, name := range m.order {
		h.Instances = append(h.Instances, m.instances[name].health())
	}
	return h
}
