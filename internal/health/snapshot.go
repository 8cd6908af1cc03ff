package health

import "time"

// Instance states.
type InstanceState string

// Routable is the one rule for traffic: an instance takes requests exactly
// when its state is READY or UNHEALTHY (failing, but not yet for
// stop_traffic_threshold_seconds). The engine's SetRoutable actions, the
// snapshot (InstanceHealth.Routable, ModelHealth.Routable, Ready, Degraded)
// and through them the scheduler's count of instances that can take work
// are all derived from it; nothing else decides it.
func (s InstanceState) Routable() bool { return s == StateReady || s == StateUnhealthy }

// The instance state machine (docs/health.md has the diagram).
const (
	StateStarting     InstanceState = "STARTING"
	StateReady        InstanceState = "READY"
	StateUnhealthy    InstanceState = "UNHEALTHY"
	StateOutOfTraffic InstanceState = "OUT_OF_TRAFFIC"
	StateRestarting   InstanceState = "RESTARTING"
	StateExited       InstanceState = "EXITED"
	StateFailed       InstanceState = "FAILED"
	StateStopping     InstanceState = "STOPPING"
	StateStopped      InstanceState = "STOPPED"
)

// ModelState is a model version's state, with Triton's strings.
type ModelState string

// Triton's model states.
const (
	ModelStateLoading     ModelState = "LOADING"
	ModelStateReady       ModelState = "READY"
	ModelStateUnloading   ModelState = "UNLOADING"
	ModelStateUnavailable ModelState = "UNAVAILABLE"
)

// Snapshot is an immutable picture of the server's health. Endpoints read it
// without locks; the engine replaces it on every change.
type Snapshot struct {
	At       time.Time
	Started  bool // the initial load finished (latches)
	Draining bool
	// Loading is the start-up progress, e.g. "loading 1/3: add_sub".
	Loading string
	// Models lists every model version the server knows, sorted by name
	// then version.
	Models []ModelHealth
	// Strict is the readiness mode (--strict-readiness).
	Strict bool
	// WatchdogStalled is set when the engine's own loop stalled.
	WatchdogStalled bool
	// Escalate lets FAILED instances fail liveness.
	Escalate bool
	// Silent is set by the probe responder (--probe-port): how long the
	// server process has sent it no snapshot, once that is past the
	// watchdog's bound; it fails the ping check. Zero in the server.
	Silent time.Duration
}

// ModelHealth is one model version's health.
type ModelHealth struct {
	Name    string
	Version string
	State   ModelState
	Reason  string
	// Ready is State == READY and at least MinReady instances routable.
	Ready    bool
	Degraded bool // ready, but fewer than all instances routable
	MinReady int
	// Expected versions count toward strict readiness.
	Expected  bool
	Instances []InstanceHealth
	// DependsOn lists the models this version's readiness follows (an
	// ensemble's steps, a declared depends_on); Ready and Reason already
	// account for them.
	DependsOn []Dependency
}

// InstanceHealth is one instance's health.
type InstanceHealth struct {
	Name     string
	State    InstanceState
	Reason   string
	Since    time.Time
	PID      int
	Restarts int
	LastExit string
	Checks   []CheckHealth
	// Transitions are the most recent state changes, oldest first.
	Transitions []Transition
	// FailingSince is when a check of this instance started failing
	// (effective state); zero while every check passes. The stop-traffic
	// and restart thresholds run from it.
	FailingSince time.Time
	// RestartAt is when a decided restart will be issued once its backoff
	// has elapsed; zero when none is waiting.
	RestartAt time.Time
	// Sequences is the instance's share of a sequence batching model's
	// sequences; nil for other models.
	Sequences *SequenceSlots
}

// SequenceSlots are the sequences an instance holds and how many it can.
// A model whose slots are all taken is busy, not unhealthy: it stays
// ready, and new sequences wait for a slot (or get 503 past the bound).
type SequenceSlots struct {
	Open  int
	Slots int
}

// CheckHealth is one check's raw last result next to its effective state.
type CheckHealth struct {
	Name        Check
	Passing     bool // effective, after thresholds
	LastOK      bool // raw last result
	LastMessage string
	LastAt      time.Time
	Consecutive int // consecutive identical raw results
	Since       time.Time
}

// State is the check's effective result as every surface words it:
// "pass" or "fail".
func (c CheckHealth) State() string { return passFail(c.Passing) }

// LastResult is the check's raw last result: "pass", "fail", or "none"
// before its first run.
func (c CheckHealth) LastResult() string {
	if c.LastAt.IsZero() {
		return "none"
	}
	return passFail(c.LastOK)
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "fail"
}

// Transition is one recorded state change.
type Transition struct {
	At     time.Time
	From   InstanceState
	To     InstanceState
	Reason string
}

// Routable reports whether the instance takes traffic (InstanceState.Routable).
func (h InstanceHealth) Routable() bool { return h.State.Routable() }

// Routable is the number of the version's instances that take traffic.
func (m ModelHealth) Routable() int {
	n := 0
	for _, in := range m.Instances {
		if in.Routable() {
			n++
		}
	}
	return n
}
