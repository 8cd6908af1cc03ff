package tritonmetrics

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/scheduler"
)

// Options are Triton's --metrics-config switches.
type Options struct {
	// CounterLatencies exports the nv_inference_*_duration_us counters
	// (counter_latencies, default true).
	CounterLatencies bool
	// HistogramLatencies exports nv_inference_first_response_histogram_ms
	// (histogram_latencies, default false).
	HistogramLatencies bool
	// SummaryLatencies exports the nv_inference_*_summary_us summaries
	// (summary_latencies, default false) with Quantiles (quantile → allowed
	// error, summary_quantiles).
	SummaryLatencies bool
	Quantiles        map[float64]float64
}

// DefaultOptions are Triton's defaults.
func DefaultOptions() Options {
	return Options{CounterLatencies: true, Quantiles: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.95: 0.001, 0.99: 0.001, 0.999: 0.001}}
}

// ParseOptions applies --metrics-config key=value settings to the
// defaults. Unknown keys and malformed values are errors naming them.
func ParseOptions(settings []string) (Options, error) {
	o := DefaultOptions()
	for _, kv := range settings {
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			return o, fmt.Errorf("--metrics-config %q: want key=value", kv)
		}
		switch key {
		case "counter_latencies", "histogram_latencies", "summary_latencies":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return o, fmt.Errorf("--metrics-config %s: want true or false, got %q", key, val)
			}
			switch key {
			case "counter_latencies":
				o.CounterLatencies = b
			case "histogram_latencies":
				o.HistogramLatencies = b
			default:
				o.SummaryLatencies = b
			}
		case "summary_quantiles":
			q, err := parseQuantiles(val)
			if err != nil {
				return o, fmt.Errorf("--metrics-config summary_quantiles: %w", err)
			}
			o.Quantiles = q
		default:
			return o, fmt.Errorf("--metrics-config: unknown key %q (known: counter_latencies, histogram_latencies, summary_latencies, summary_quantiles)", key)
		}
	}
	return o, nil
}

// parseQuantiles reads Triton's "q:err,q:err" form.
func parseQuantiles(s string) (map[float64]float64, error) {
	out := map[float64]float64{}
	for _, part := range strings.Split(s, ",") {
		qs, es, ok := strings.Cut(strings.TrimSpace(part), ":")
		q, err1 := strconv.ParseFloat(qs, 64)
		e, err2 := strconv.ParseFloat(es, 64)
		if !ok || err1 != nil || err2 != nil || q < 0 || q > 1 || e < 0 || e > 1 {
			return nil, fmt.Errorf("%q is not quantile:error with both in [0, 1]", part)
		}
		out[q] = e
	}
	return out, nil
}

// firstResponseBuckets are Triton's default buckets of
// nv_inference_first_response_histogram_ms.
var firstResponseBuckets = []float64{100, 500, 2000, 5000}

// Latencies holds the families that need each request's times rather
// than cumulative counters: Triton's opt-in histogram and summaries.
type Latencies struct {
	firstResponse                        *prometheus.HistogramVec
	request, queue, input, infer, output *prometheus.SummaryVec
}

// NewLatencies registers the families o enables on reg.
func NewLatencies(reg prometheus.Registerer, o Options) *Latencies {
	l := &Latencies{}
	mv := []string{"model", "version"}
	if o.HistogramLatencies {
		l.firstResponse = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nv_inference_first_response_histogram_ms",
			Help:    "Duration from request to first response in milliseconds",
			Buckets: firstResponseBuckets,
		}, mv)
		reg.MustRegister(l.firstResponse)
	}
	if o.SummaryLatencies {
		sum := func(name, help string) *prometheus.SummaryVec {
			v := prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: name, Help: help, Objectives: o.Quantiles}, mv)
			reg.MustRegister(v)
			return v
		}
		l.request = sum("nv_inference_request_summary_us", "Summary of inference request duration in microseconds (includes cached requests)")
		l.queue = sum("nv_inference_queue_summary_us", "Summary of inference queuing duration in microseconds (includes cached requests)")
		l.input = sum("nv_inference_compute_input_summary_us", "Summary of compute input duration in microseconds (does not include cached requests)")
		l.infer = sum("nv_inference_compute_infer_summary_us", "Summary of compute inference duration in microseconds (does not include cached requests)")
		l.output = sum("nv_inference_compute_output_summary_us", "Summary of compute output duration in microseconds (does not include cached requests)")
	}
	return l
}

// For returns the observer of one model version, or nil when no latency
// family is enabled.
func (l *Latencies) For(model, version string) scheduler.Observer {
	if l == nil || l.firstResponse == nil && l.request == nil {
		return nil
	}
	o := &versionObserver{}
	if l.firstResponse != nil {
		o.firstResponse = l.firstResponse.WithLabelValues(model, version)
	}
	if l.request != nil {
		o.summaries = []prometheus.Observer{
			l.request.WithLabelValues(model, version), l.queue.WithLabelValues(model, version),
			l.input.WithLabelValues(model, version), l.infer.WithLabelValues(model, version),
			l.output.WithLabelValues(model, version),
		}
	}
	return o
}

type versionObserver struct {
	firstResponse prometheus.Observer
	summaries     []prometheus.Observer // request, queue, input, infer, output
}

func (o *versionObserver) Observe(obs scheduler.Observation) {
	if o.firstResponse != nil {
		// One response per request: the first response ends the request.
		o.firstResponse.Observe(float64(obs.Total.Microseconds()) / 1000)
	}
	if o.summaries != nil {
		for i, d := range [...]int64{obs.Total.Microseconds(), obs.Queue.Microseconds(), obs.Input.Microseconds(), obs.Infer.Microseconds(), obs.Output.Microseconds()} {
			o.summaries[i].Observe(float64(d))
		}
	}
}
