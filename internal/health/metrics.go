package health

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus metrics, registered on the injected
// Registerer (never a global one). Gauges are computed from the current
// Snapshot at scrape time, so they can never disagree with the health
// endpoints and never keep series of versions the server forgot; counters
// are incremented by the loop as transitions and check results happen.
//
//	vigil_server_live                     gauge   1 when /livez passes
//	vigil_server_ready                    gauge   1 when /readyz passes
//	vigil_model_ready{model,version}      gauge
//	vigil_model_degraded{model,version}   gauge   ready, but not every instance routable
//	vigil_instance_state{model,version,instance,state}  gauge 1 for the current state, 0 for the others
//	vigil_instance_restarts_total{model,version,instance}  counter (restarts since the version loaded)
//	vigil_health_check_results_total{model,version,instance,check,result}  counter, result "pass"|"fail"
//	vigil_health_check_duration_seconds{model,version,check}  histogram of heartbeat and hook call times
//	vigil_health_transitions_total{model,version,instance,from,to}  counter
//	vigil_health_events_dropped_total     counter  check/execute results dropped by a full queue
type metrics struct {
	checks      *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	transitions *prometheus.CounterVec
	dropped     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, snapshot func() *Snapshot) *metrics {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_health_check_results_total",
			Help: "Raw health check results per instance and check (result is pass or fail).",
		}, []string{"model", "version", "instance", "check", "result"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vigil_health_check_duration_seconds",
			Help:    "How long heartbeat pings and user health hooks took, timeouts included.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10),
		}, []string{"model", "version", "check"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_health_transitions_total",
			Help: "Instance state transitions.",
		}, []string{"model", "version", "instance", "from", "to"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_health_events_dropped_total",
			Help: "Check and execute results dropped because the health engine's queue was full.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.checks, m.durations, m.transitions, m.dropped, newSnapshotCollector(snapshot))
	}
	return m
}

func (m *metrics) check(a action) {
	m.checks.WithLabelValues(a.key.Model, a.key.Version, a.key.Instance, string(a.check), passFail(a.ok)).Inc()
	if a.took > 0 {
		m.durations.WithLabelValues(a.key.Model, a.key.Version, string(a.check)).Observe(a.took.Seconds())
	}
}

func (m *metrics) transition(a action) {
	m.transitions.WithLabelValues(a.key.Model, a.key.Version, a.key.Instance, a.from, a.to).Inc()
}

// allInstanceStates lists every instance state for vigil_instance_state.
var allInstanceStates = [...]InstanceState{
	StateStarting, StateReady, StateUnhealthy, StateOutOfTraffic, StateRestarting,
	StateExited, StateFailed, StateStopping, StateStopped,
}

// snapshotCollector exports the gauges of the current Snapshot.
type snapshotCollector struct {
	snapshot      func() *Snapshot
	live, ready   *prometheus.Desc
	modelReady    *prometheus.Desc
	modelDegraded *prometheus.Desc
	instState     *prometheus.Desc
	instRestarts  *prometheus.Desc
}

func newSnapshotCollector(snapshot func() *Snapshot) *snapshotCollector {
	mv := []string{"model", "version"}
	inst := []string{"model", "version", "instance"}
	return &snapshotCollector{
		snapshot:      snapshot,
		live:          prometheus.NewDesc("vigil_server_live", "1 when the liveness probe passes.", nil, nil),
		ready:         prometheus.NewDesc("vigil_server_ready", "1 when the readiness probe passes.", nil, nil),
		modelReady:    prometheus.NewDesc("vigil_model_ready", "1 when the model version is ready (Snapshot.VersionReady: ready and the server not draining).", mv, nil),
		modelDegraded: prometheus.NewDesc("vigil_model_degraded", "1 when the model version is ready with fewer than all instances routable.", mv, nil),
		instState:     prometheus.NewDesc("vigil_instance_state", "1 for the instance's current state, 0 for the others.", append(inst, "state"), nil),
		instRestarts:  prometheus.NewDesc("vigil_instance_restarts_total", "Restarts of the instance since its model version loaded.", inst, nil),
	}
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.live, c.ready, c.modelReady, c.modelDegraded, c.instState, c.instRestarts} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	live, _ := s.Live()
	ready, _ := s.Ready()
	ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, b2f(live))
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(ready))
	for _, m := range s.Models {
		ready, _ := s.VersionReady(&m)
		ch <- prometheus.MustNewConstMetric(c.modelReady, prometheus.GaugeValue, b2f(ready), m.Name, m.Version)
		ch <- prometheus.MustNewConstMetric(c.modelDegraded, prometheus.GaugeValue, b2f(m.Degraded), m.Name, m.Version)
		for _, in := range m.Instances {
			for _, st := range allInstanceStates {
				ch <- prometheus.MustNewConstMetric(c.instState, prometheus.GaugeValue, b2f(in.State == st), m.Name, m.Version, in.Name, string(st))
			}
			ch <- prometheus.MustNewConstMetric(c.instRestarts, prometheus.CounterValue, float64(in.Restarts), m.Name, m.Version, in.Name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
