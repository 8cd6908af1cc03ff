// Package health is vigil's health engine: it turns events about model
// versions and their instances into per-instance state machines, tells the
// model manager what to do about them (an Actuator), and keeps an immutable,
// always-current Snapshot that every health endpoint reads without waiting
// on anything.
//
// # Feeding the engine
//
// Producers Post Events; Post never blocks (see Engine.Post for the bound).
// The model manager posts ModelLoading (with the version's instance names,
// its Policy and whether it is Expected for strict readiness), ModelLoaded,
// ModelLoadFailed, ModelUnloading, ModelUnloaded, StartupComplete and
// Draining; the instance supervisor posts InstanceSpawned (with the PID),
// InstanceInitialized, InstanceInitFailed, InstanceExited (ExitCode or
// Signal), InstanceStopped and CheckResult (heartbeat, hook; timeouts as
// failures with TimedOut); the scheduler posts ExecuteResult once per
// executed batch. Events carrying a PID that is not the instance's current
// process are ignored, so a late report of a replaced process cannot
// disturb its successor; set PID whenever it is known. Events for a model
// version never announced by ModelLoading are ignored; an InstanceSpawned
// for an instance name not listed adds it.
//
// # Instance state machine
//
// The diagram is on the tracker type (tracker.go). In short:
//
//   - InstanceSpawned: STARTING, not routable. Checks are not judged before
//     initialize returns.
//   - InstanceInitialized: READY, routable; check counters reset; the
//     restart check delay starts.
//   - Any check's effective state failing: UNHEALTHY, still routable; after
//     StopTrafficThreshold of continuous failure OUT_OF_TRAFFIC; after
//     RestartThreshold a restart. All checks passing again: READY.
//   - A timed-out execute (hang): restart at once.
//   - Process exit or failed initialize: EXITED at once, no threshold, last
//     exit recorded; a restart follows per backoff.
//   - A restart: RESTARTING and Actuator.Restart; the exit of the replaced
//     process is expected and not a crash; InstanceSpawned starts over.
//   - MaxRestarts used up within RestartWindow: FAILED and Actuator.Fail;
//     terminal until the version is loaded again (ModelLoading) or
//     unloaded. With Escalate, a FAILED instance fails liveness.
//   - Unload: STOPPING, then STOPPED on exit or InstanceStopped;
//     InstanceStopped alone: STOPPED. No restarts.
//   - After Draining, exits and hangs are recorded but never restarted.
//   - ModelLoadFailed, ModelUnloading and ModelUnloaded retire the
//     version's instances (STOPPED/STOPPING, FAILED ones included): they
//     are never started or restarted again, and a failed load is reported
//     as the version's UNAVAILABLE state, not escalated to liveness.
//
// Routable means READY or UNHEALTHY; the engine calls SetRoutable exactly
// when that changes. Each transition is kept in a ring of the last 16 and
// logged once (keys model, version, instance, from, to, reason, restarts, pid);
// check results are never logged, only counted.
//
// # Checks
//
// Every instance shows five checks, raw last result next to effective
// state: process (event driven), heartbeat and hook (Kubernetes counting
// with FailureThreshold/SuccessThreshold; the first counted result after a
// start applies at once; a check that reported and then falls silent for
// 2 periods + timeout fails), progress (a timed-out execute) and errors
// (ConsecutiveErrors in a row or an ErrorPatterns match fail it at once;
// the next successful execute passes it). A check with no result yet is
// shown passing with a zero LastAt.
//
// # Models and server
//
// A version is READY between ModelLoaded and an unload or failure, and
// Ready while at least MinReadyInstances instances are routable; Degraded
// when ready with fewer than all routable. A READY version whose instances
// are all FAILED is shown UNAVAILABLE with the reason. ModelUnloading and
// ModelUnloaded make the version not Expected, so strict readiness ignores
// it. Liveness, readiness and startup are computed from the Snapshot (see
// Snapshot.Checks); liveness also fails when the engine's own loop stalls
// (see WatchdogMissedIntervals).
package health
