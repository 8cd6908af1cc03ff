package health

import "time"

// InstanceKey names one model instance: the model, its version and the
// instance's own name (Triton style, e.g. "add_sub_0").
type InstanceKey struct {
	Model    string
	Version  string
	Instance string
}

// ModelKey names one model version.
type ModelKey struct {
	Model   string
	Version string
}

// EventKind says what happened.
type EventKind int

// The events the engine consumes. Producers: the model manager (lifecycle),
// the instance supervisor (process and checks) and the scheduler (execute
// outcomes).
const (
	// Model lifecycle.
	ModelLoading    EventKind = iota // a version starts loading; Instances lists its instances
	ModelLoaded                      // every instance was spawned; readiness now follows them
	ModelLoadFailed                  // Reason says why (config error, initialize raised, …)
	ModelUnloading                   // an unload began; the version leaves readiness
	ModelUnloaded                    // the version is gone; Reason "unloaded"
	StartupComplete                  // the initial load finished
	Draining                         // shutdown began: readiness fails from now on

	// Instance process.
	InstanceSpawned     // process started, initialize running
	InstanceInitialized // initialize returned
	InstanceInitFailed  // initialize raised or the stub failed to start; Reason
	InstanceExited      // the process is gone; ExitCode or Signal, Reason
	InstanceStopped     // stopped on purpose (unload, shutdown)

	// Checks and outcomes.
	CheckResult   // Check, OK, Reason
	ExecuteResult // OK, Reason, TimedOut

	// InstanceRemoved forgets a stopped instance: a reload replaced it with
	// a new one under another name, and the version keeps serving.
	InstanceRemoved

	// ModelForgotten drops a model version from the engine and the snapshot:
	// an entry that no longer stands for anything (the configuration error
	// of a load that has since succeeded).
	ModelForgotten

	// StartupPlanned lists the models the initial load will load
	// (Instances holds their names), so that progress reads "loading k/n"
	// from the first moment.
	StartupPlanned

	// InstanceSuspended: the reaper saw the process stopped by a signal
	// (Signal, e.g. SIGSTOP); it cannot run until it is continued.
	InstanceSuspended
	// InstanceResumed: the reaper saw the stopped process continued
	// (SIGCONT).
	InstanceResumed

	// SequencesChanged gives an instance's open sequences and sequence
	// slots (Open, Slots), from the sequence batcher. It is information for
	// the snapshot, not a health input: busy is not unhealthy.
	SequencesChanged
)

// Cause classifies a failure an event reports, so that the engine decides
// on it and never on the wording of Reason.
type Cause int

// The causes. The zero value is "unspecified": the event kind says it all.
const (
	CauseUnspecified Cause = iota
	// CauseModelRaised: the model's own code raised (initialize, execute);
	// Reason already names the step, e.g. "initialize raised ValueError: …".
	CauseModelRaised
	// CauseHang: the stub stopped making progress: its heartbeat failed
	// while it held a batch or ran initialize, or a step ran past its limit
	// (execute_timeout_seconds, initialize_timeout_seconds). A hang is
	// restarted at once, without the crash backoff.
	CauseHang
)

// Check names one of an instance's checks.
type Check string

// The instance checks of the health model.
const (
	CheckProcess   Check = "process"   // the process is running (event driven)
	CheckHeartbeat Check = "heartbeat" // control-channel ping answered in time
	CheckProgress  Check = "progress"  // no execute ran past its limit
	CheckHook      Check = "hook"      // the user's is_healthy()/is_ready()
	CheckErrors    Check = "errors"    // passive: consecutive errors, error patterns
)

// Event is one input to the engine.
type Event struct {
	Kind     EventKind
	At       time.Time
	Instance InstanceKey // Model and Version are also set for model events
	// Instances lists a version's instance names (ModelLoading).
	Instances []string
	// Policy applies to the version's instances (ModelLoading).
	Policy *Policy
	// Expected is false for versions that should not count toward strict
	// readiness (ModelLoading).
	Expected bool
	// Deps are the models the version's readiness follows (ModelLoading):
	// an ensemble's steps, a model's declared depends_on.
	Deps     []Dependency
	Check    Check
	OK       bool
	TimedOut bool
	// Cause classifies a failure (InstanceInitFailed, ExecuteResult).
	Cause    Cause
	Reason   string
	PID      int
	ExitCode int
	Signal   string
	// Took is how long the check ran (CheckResult), for the duration
	// histogram.
	Took time.Duration
	// Open and Slots are an instance's open sequences and sequence slots
	// (SequencesChanged).
	Open, Slots int

	// synced is closed once the engine has published a snapshot that
	// includes every event posted before this one (Engine.Sync).
	synced chan struct{}
}

// Dependency is a model another model's readiness follows: the dependent
// is ready only while the dependency is (docs/health.md, "Readiness follows
// dependencies").
type Dependency struct {
	Model string
	// Version is a specific version; "" follows the version a request
	// without one is served by.
	Version string
	// Label names the dependency in reasons: "step" for an ensemble's
	// steps, "dependency" for depends_on.
	Label string
}

// Actuator carries out the engine's decisions. The model manager implements
// it; every method must return quickly and never call back into the engine
// synchronously.
type Actuator interface {
	// SetRoutable puts the instance in or out of traffic; serving is how
	// many instances of its model version are routable in the snapshot
	// that made the change (ModelHealth.Routable). Into traffic comes
	// before that snapshot is published, out of it after: whoever reads a
	// model ready finds its queue taking requests, and one that no longer
	// is was already reported not ready.
	SetRoutable(k InstanceKey, routable bool, serving int)
	// Restart stops the instance's process, if any, and starts a new one.
	Restart(k InstanceKey, reason string)
	// Fail stops the instance: restarts are exhausted. The engine retries
	// it at the maximum backoff with Restart until the model is unloaded.
	Fail(k InstanceKey, reason string)
}
