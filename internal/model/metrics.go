package model

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/apierr"
)

// metrics are the inference metrics per model version.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_inference_requests_total",
			Help: "Inference requests by model, version and outcome (success or the error class).",
		}, []string{"model", "version", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vigil_inference_request_duration_seconds",
			Help:    "Inference request latency, queueing included, by model and version.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
		}, []string{"model", "version"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	return m
}

func (m *metrics) observe(model, version string, start time.Time, err error) {
	outcome := "success"
	if err != nil {
		outcome = apierr.CodeOf(err).String()
	}
	m.requests.WithLabelValues(model, version, outcome).Inc()
	m.duration.WithLabelValues(model, version).Observe(time.Since(start).Seconds())
}
