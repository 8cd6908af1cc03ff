// Package manifest generates Kubernetes (and KServe) manifests for a vigil
// model repository, with startup, readiness and liveness probes, preStop
// and grace period derived from the models' health policies. It backs
// `vigil manifests`; docs/kubernetes.md explains every rule with numbers.
package manifest

import (
	"fmt"
	"slices"
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

// ModelInfo is what the derivation needs to know about one model.
type ModelInfo struct {
	Name string
	// Policy is the model's effective health policy (server defaults
	// overlaid with its health.yaml).
	Policy health.Policy
	// Instances is the model's instance count (the sum of its
	// instance_group counts).
	Instances int
	// LoadTime is how long the model is expected to take to load, at worst;
	// 0 means unknown (Options.LoadTime applies).
	LoadTime time.Duration
}

// Derivation constants. docs/kubernetes.md states each rule with these
// numbers; change both together.
const (
	// startupPeriod paces the startup probe: the pod is seen started at most
	// this long after vigil's /startupz turns green.
	startupPeriod = 5 * time.Second
	// readinessMinPeriod and readinessMaxPeriod bound the readiness period.
	readinessMinPeriod = 2 * time.Second
	readinessMaxPeriod = 5 * time.Second
	// livenessPeriod and livenessFailureFactor make liveness slower and more
	// tolerant than readiness.
	livenessPeriod        = 10 * time.Second
	livenessFailureFactor = 3
	// probeTimeout is the timeoutSeconds of HTTP and gRPC probes: vigil's
	// health endpoints answer from a snapshot, never waiting on a model.
	probeTimeout = time.Second
	// execProbeTimeout covers `vigil probe` (1 s to connect, 1 s for the
	// answer) plus process start.
	execProbeTimeout = 3 * time.Second
	// graceMargin is added to the grace period after the shutdown timeout
	// and the finalize timeout: vigil gives stopping instances the finalize
	// timeout plus 5 s before it kills stragglers, and 5 s more covers
	// process exit.
	graceMargin = 10 * time.Second
	// serverLoadConcurrency is how many models `vigil serve` loads at once
	// at start-up.
	serverLoadConcurrency = 4
	// defaultLoadTime is the assumed worst load time of one model when
	// nothing better is known.
	defaultLoadTime = 5 * time.Minute
)

// Timing is one probe's timing, in whole seconds, as the Kubernetes Probe
// fields take them.
type Timing struct {
	PeriodSeconds    int32
	TimeoutSeconds   int32
	FailureThreshold int32
	SuccessThreshold int32
}

// Window is how long the probe must fail before Kubernetes acts:
// period × failureThreshold.
func (t Timing) Window() time.Duration {
	return time.Duration(t.PeriodSeconds) * time.Duration(t.FailureThreshold) * time.Second
}

// Reaction is how long after the server starts failing the probe the
// kubelet acts: FailureThreshold probes in a row, the first of which comes
// up to one period after the failure begins.
func (t Timing) Reaction() (least, most time.Duration) {
	period := time.Duration(t.PeriodSeconds) * time.Second
	return t.Window() - period, t.Window()
}

// Plan is the derived timing of a deployment: probes, drain and resources.
type Plan struct {
	// StartupBudget is how long the pod may take to start: the startup
	// probe allows at least this long before it gives up.
	StartupBudget time.Duration
	// StopTraffic is the smallest stop_traffic_threshold_seconds of the
	// models, the bound for the readiness window.
	StopTraffic time.Duration
	Startup     Timing
	Readiness   Timing
	Liveness    Timing
	// PreStopSeconds is the preStop sleep (0: no preStop hook).
	PreStopSeconds int64
	// GracePeriodSeconds is terminationGracePeriodSeconds.
	GracePeriodSeconds int64
	// Instances is the total instance count of all models.
	Instances int
}

// Derive computes the plan for models under o. An empty models list means
// the defaults policy alone (o.Defaults, or health.DefaultPolicy).
func Derive(models []ModelInfo, o Options) (Plan, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Plan{}, err
	}
	return derive(models, o)
}

func derive(models []ModelInfo, o Options) (Plan, error) {
	if len(models) == 0 {
		models = []ModelInfo{{Name: "(defaults)", Policy: *o.Defaults, Instances: 1}}
	}
	var p Plan
	slowest := time.Duration(0)
	p.StopTraffic = -1
	for _, m := range models {
		if m.Instances < 0 {
			return Plan{}, fmt.Errorf("model %q: negative instance count %d", m.Name, m.Instances)
		}
		p.Instances += m.Instances
		lt := m.LoadTime
		if lt <= 0 {
			lt = o.LoadTime
		}
		slowest = max(slowest, lt)
		if p.StopTraffic < 0 || m.Policy.StopTrafficThreshold < p.StopTraffic {
			p.StopTraffic = m.Policy.StopTrafficThreshold
		}
	}

	// Startup: vigil loads serverLoadConcurrency models at a time, so the
	// last load ends at most ceil(n/concurrency) slowest loads after start.
	p.StartupBudget = o.StartupBudget
	if p.StartupBudget == 0 {
		waves := (len(models) + serverLoadConcurrency - 1) / serverLoadConcurrency
		p.StartupBudget = time.Duration(waves) * slowest
	}
	timeout := seconds(probeTimeout)
	if o.ProbeProtocol == ProbeExec {
		timeout = seconds(execProbeTimeout)
	}
	// The kubelet probes at once, then every period: failure number F
	// happens (F-1) periods after start, hence the +1.
	p.Startup = Timing{
		PeriodSeconds:    seconds(startupPeriod),
		TimeoutSeconds:   timeout,
		FailureThreshold: int32(ceilDiv(p.StartupBudget, startupPeriod)) + 1,
		SuccessThreshold: 1,
	}

	// Readiness follows vigil's own readiness, which already applies the
	// policies' thresholds: count once (failureThreshold 1) and keep the
	// period within the smallest stop-traffic threshold, clamped to
	// [readinessMinPeriod, readinessMaxPeriod].
	period := min(max(p.StopTraffic.Truncate(time.Second), readinessMinPeriod), readinessMaxPeriod)
	p.Readiness = Timing{
		PeriodSeconds:    seconds(period),
		TimeoutSeconds:   timeout,
		FailureThreshold: 1,
		SuccessThreshold: 1,
	}

	// Liveness only fails when in-server recovery is exhausted or vigil's
	// loop stalls: probe less often and tolerate more failures.
	p.Liveness = Timing{
		PeriodSeconds:    seconds(max(livenessPeriod, 2*period)),
		TimeoutSeconds:   timeout,
		FailureThreshold: livenessFailureFactor * p.Readiness.FailureThreshold,
		SuccessThreshold: 1,
	}

	// Drain: preStop sleeps while endpoints are removed; then SIGTERM makes
	// vigil fail readiness and serve for its drain delay, let in-flight
	// requests finish within the shutdown timeout, run finalize() within
	// the finalize timeout and kill stragglers.
	p.PreStopSeconds = int64(ceilDiv(o.DrainDelay, time.Second))
	p.GracePeriodSeconds = p.PreStopSeconds +
		int64(ceilDiv(o.DrainDelay, time.Second)) +
		int64(ceilDiv(o.ShutdownTimeout, time.Second)) +
		int64(ceilDiv(o.FinalizeTimeout, time.Second)) +
		int64(graceMargin/time.Second)
	return p, nil
}

// seconds converts a whole-second duration to the int32 of a Probe field,
// rounding up and never below 1.
func seconds(d time.Duration) int32 {
	return int32(max(ceilDiv(d, time.Second), 1))
}

// ceilDiv is ⌈a/b⌉ for non-negative a and positive b.
func ceilDiv(a, b time.Duration) int64 {
	if a <= 0 {
		return 0
	}
	return int64((a + b - 1) / b)
}

// sortedModels returns models sorted by name, so output is stable whatever
// the caller's order.
func sortedModels(models []ModelInfo) []ModelInfo {
	out := slices.Clone(models)
	slices.SortFunc(out, func(a, b ModelInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}
