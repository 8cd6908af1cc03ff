package health

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// core is the engine's whole state: every model version and its instances,
// plus the server-level flags. Like tracker it is a pure step function with
// no I/O and no locks; the engine's loop is its only user.
type core struct {
	strict   bool
	escalate bool
	started  bool
	draining bool
	planned  []string // the initial load's models (StartupPlanned)
	models   map[ModelKey]*modelTracker
}

func newCore(strict, escalate bool) *core {
	return &core{strict: strict, escalate: escalate, models: map[ModelKey]*modelTracker{}}
}

// step applies one event and returns the actions it causes.
func (c *core) step(ev Event, now time.Time) []action {
	return c.stamp(c.apply(ev, now))
}

// stamp marks the model transitions among acts with whether the server is
// draining as they happen: the level of their log line depends on it, and
// the published Snapshot lags the batch of events being applied.
func (c *core) stamp(acts []action) []action {
	for i := range acts {
		if acts[i].kind == actModelTransition {
			acts[i].draining = c.draining
		}
	}
	return acts
}

// apply is step before stamp.
func (c *core) apply(ev Event, now time.Time) []action {
	mk := ModelKey{Model: ev.Instance.Model, Version: ev.Instance.Version}
	switch ev.Kind {
	case ModelForgotten:
		delete(c.models, mk)
		return nil
	case StartupPlanned:
		c.planned = append([]string(nil), ev.Instances...)
		return nil
	case StartupComplete:
		c.started = true // latches
		return nil
	case Draining:
		c.draining = true
		for _, m := range c.models {
			for _, t := range m.instances {
				t.noRestart = true
			}
		}
		return nil
	case ModelLoading:
		// A (re)load starts the version over: fresh trackers, FAILED
		// forgotten, restart budgets full again.
		m := newModelTracker(ev, now)
		if old, ok := c.models[mk]; ok {
			m.shownState, m.shownReady = old.shownState, old.shownReady
		}
		if c.draining {
			for _, t := range m.instances {
				t.noRestart = true
			}
		}
		c.models[mk] = m
		return append(m.observe(c.depState(m)), c.observeDependents(mk)...)
	}
	m, ok := c.models[mk]
	if !ok {
		return nil // events for a version never announced by ModelLoading are ignored
	}
	var out []action
	switch ev.Kind {
	case ModelLoaded, ModelLoadFailed, ModelUnloading, ModelUnloaded:
		out = m.step(ev, now)
	case InstanceRemoved:
		m.removeInstance(ev.Instance.Instance)
	case SequencesChanged:
		if t, ok := m.instances[ev.Instance.Instance]; ok {
			t.sequences = &SequenceSlots{Open: ev.Open, Slots: ev.Slots}
		}
		return nil
	case InstanceSpawned, InstanceInitialized, InstanceInitFailed, InstanceExited, InstanceStopped,
		InstanceSuspended, InstanceResumed, CheckResult, ExecuteResult:
		t, ok := m.instances[ev.Instance.Instance]
		if !ok {
			if ev.Kind != InstanceSpawned {
				return nil
			}
			t = m.addInstance(ev.Instance.Instance, now)
			t.noRestart = c.draining
		}
		out = t.step(ev, now)
	}
	out = append(out, m.observe(c.depState(m))...)
	return append(out, c.observeDependents(mk)...)
}

// tick advances time for every instance.
func (c *core) tick(now time.Time) []action {
	var out []action
	for _, mk := range c.keys() {
		m := c.models[mk]
		before := len(out)
		for _, name := range m.order {
			out = append(out, m.instances[name].tick(now)...)
		}
		if len(out) > before {
			out = append(out, m.observe(c.depState(m))...)
			out = append(out, c.observeDependents(mk)...)
		}
	}
	return c.stamp(out)
}

// nextDeadline is the earliest time tick has something to do; zero if none.
func (c *core) nextDeadline() time.Time {
	var d time.Time
	for _, m := range c.models {
		for _, t := range m.instances {
			if n := t.nextDeadline(); !n.IsZero() && (d.IsZero() || n.Before(d)) {
				d = n
			}
		}
	}
	return d
}

// keys lists the model versions sorted by name, then numerically by version.
func (c *core) keys() []ModelKey {
	ks := make([]ModelKey, 0, len(c.models))
	for k := range c.models {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b ModelKey) int {
		if n := strings.Compare(a.Model, b.Model); n != 0 {
			return n
		}
		switch {
		case versionLess(a.Version, b.Version):
			return -1
		case versionLess(b.Version, a.Version):
			return 1
		}
		return 0
	})
	return ks
}

// snapshot builds an immutable picture of the current state.
func (c *core) snapshot(now time.Time) *Snapshot {
	s := &Snapshot{
		At:       now,
		Started:  c.started,
		Draining: c.draining,
		Strict:   c.strict,
		Escalate: c.escalate,
		Models:   make([]ModelHealth, 0, len(c.models)),
	}
	for _, k := range c.keys() {
		m := c.models[k]
		s.Models = append(s.Models, m.health(c.depState(m)))
	}
	if !c.started {
		s.Loading = loadingProgress(s.Models, c.planned)
	}
	return s
}

// loadingProgress says how far the initial load is, e.g.
// "loading 2/3: add_sub". planned names the models the load will try, some
// of which the engine may not have heard of yet.
func loadingProgress(ms []ModelHealth, planned []string) string {
	total, done := 0, 0
	loading := ""
	seen := map[string]bool{}
	for _, m := range ms {
		if !m.Expected {
			continue
		}
		seen[m.Name] = true
		total++
		if m.State == ModelStateLoading {
			if loading == "" {
				loading = m.Name
			}
			continue
		}
		done++
	}
	for _, name := range planned {
		if seen[name] {
			continue
		}
		total++
		if loading == "" {
			loading = name
		}
	}
	if loading == "" {
		return "initial load in progress"
	}
	return fmt.Sprintf("loading %d/%d: %s", done+1, total, loading)
}

// depState resolves a version's dependencies against the other versions:
// ok when every one is ready (its own dependencies included), else the
// reason of the first that is not.
func (c *core) depState(m *modelTracker) depState {
	if len(m.deps) == 0 {
		return depsOK
	}
	return c.depStateVisiting(m, map[ModelKey]bool{m.key: true})
}

func (c *core) depStateVisiting(m *modelTracker, visiting map[ModelKey]bool) depState {
	for _, dep := range m.deps {
		d := c.resolveDep(dep, visiting)
		if d == nil {
			what := "it is not loaded"
			if dep.Version != "" {
				what = "version " + dep.Version + " is not loaded"
			}
			return depState{reason: fmt.Sprintf("%s %s: %s", dep.Label, dep.Model, what)}
		}
		if visiting[d.key] {
			continue // a cycle of declarations: each edge is judged once
		}
		visiting[d.key] = true
		ds := depsOK
		if len(d.deps) > 0 {
			ds = c.depStateVisiting(d, visiting)
		}
		delete(visiting, d.key)
		state, reason, ready, _, _, _ := d.view(ds)
		if !ready {
			if reason == "" {
				reason = "is " + string(state)
			}
			return depState{reason: fmt.Sprintf("%s %s: %s", dep.Label, dep.Model, reason)}
		}
	}
	return depsOK
}

// resolveDep finds the version a dependency names: that version, or the
// one a request without a version is served by (defaultRank, judged on
// each candidate's readiness with its own dependencies). visiting holds
// the versions whose dependencies are being judged, to stop at cycles.
func (c *core) resolveDep(dep Dependency, visiting map[ModelKey]bool) *modelTracker {
	if dep.Version != "" {
		return c.models[ModelKey{Model: dep.Model, Version: dep.Version}]
	}
	var best *modelTracker
	bestRank := 0
	for k, m := range c.models {
		if k.Model != dep.Model {
			continue
		}
		r := defaultRank(c.readyVisiting(m, visiting), m.expected)
		if best == nil || preferDefault(k.Version, r, best.key.Version, bestRank) {
			best, bestRank = m, r
		}
	}
	return best
}

// readyVisiting is m's readiness with its dependencies judged, except those
// already being judged further up (a cycle of declarations).
func (c *core) readyVisiting(m *modelTracker, visiting map[ModelKey]bool) bool {
	ds := depsOK
	if len(m.deps) > 0 && !visiting[m.key] {
		visiting[m.key] = true
		ds = c.depStateVisiting(m, visiting)
		delete(visiting, m.key)
	}
	_, _, ready, _, _, _ := m.view(ds)
	return ready
}

// observeDependents re-derives every version that depends on the model of
// changed, so that a step's change shows in its ensembles' transitions.
func (c *core) observeDependents(changed ModelKey) []action {
	var out []action
	for _, k := range c.keys() {
		m := c.models[k]
		if k == changed || !dependsOn(m, changed.Model, map[string]bool{}, c) {
			continue
		}
		out = append(out, m.observe(c.depState(m))...)
	}
	return out
}

// dependsOn reports whether m depends on model, directly or through other
// dependents.
func dependsOn(m *modelTracker, model string, seen map[string]bool, c *core) bool {
	for _, dep := range m.deps {
		if dep.Model == model {
			return true
		}
		if seen[dep.Model] {
			continue
		}
		seen[dep.Model] = true
		if d := c.resolveDep(dep, map[ModelKey]bool{}); d != nil && dependsOn(d, model, seen, c) {
			return true
		}
	}
	return false
}
