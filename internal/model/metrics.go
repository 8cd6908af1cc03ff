package model

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// metrics are the inference metrics per model version.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	responses *prometheus.HistogramVec
	ended     *prometheus.CounterVec
	dropped   *prometheus.CounterVec
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
		responses: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vigil_stream_responses_per_request",
			Help:    "Responses per streamed request (gRPC ModelStreamInfer, generate, generate_stream), by model and version.",
			Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096},
		}, []string{"model", "version"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_stream_ends_total",
			Help: "Streamed requests by how they ended: final (the model's FINAL), error (an error response), died (the instance exited), timeout (execute_timeout_seconds or --max-stream-duration), cancelled (the client went away).",
		}, []string{"model", "version", "end"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_responses_dropped_total",
			Help: "Responses a model sent after its request had ended (the client went away, a limit passed); they are never written to the client.",
		}, []string{"model", "version"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.responses, m.ended, m.dropped)
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

// observeStream counts one streamed request's responses and how it ended.
func (m *metrics) observeStream(model, version string, responses int, err error) {
	m.responses.WithLabelValues(model, version).Observe(float64(responses))
	m.ended.WithLabelValues(model, version, streamEnd(err)).Inc()
}

// streamEnd classifies how a stream ended.
func streamEnd(err error) string {
	switch {
	case err == nil:
		return "final"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, scheduler.ErrInstanceDied):
		return "died"
	}
	switch apierr.CodeOf(err) {
	case apierr.Cancelled:
		return "cancelled"
	case apierr.DeadlineExceeded:
		return "timeout"
	}
	return "error"
}
