// Package tritonmetrics exports Triton's Prometheus metric families beside
// vigil's own, with Triton's names, types, labels and units, so that
// dashboards, alerts and autoscaling rules written for Triton (for example
// on nv_inference_queue_duration_us / nv_inference_compute_infer_duration_us)
// work unchanged:
//
//	nv_inference_request_success{model,version}          counter  successful requests
//	nv_inference_request_failure{model,version,reason}   counter  failed requests; reason REJECTED, CANCELED, BACKEND or OTHER
//	nv_inference_count{model,version}                    counter  inferences (a batch of n counts n)
//	nv_inference_exec_count{model,version}               counter  model executions (batches)
//	nv_inference_pending_request_count{model,version}    gauge    requests waiting for an instance
//	nv_inference_request_duration_us{model,version}      counter  cumulative end-to-end time of successful requests, µs
//	nv_inference_queue_duration_us{model,version}        counter  cumulative queue time, µs
//	nv_inference_compute_input_duration_us{model,version}   counter  cumulative input processing, µs
//	nv_inference_compute_infer_duration_us{model,version}   counter  cumulative model execution, µs
//	nv_inference_compute_output_duration_us{model,version}  counter  cumulative output processing, µs
//	nv_model_load_duration_secs{model,version}           gauge    how long the version's load took, s
//	nv_cpu_utilization                                   gauge    CPU utilization of the machine, 0.0–1.0
//	nv_cpu_memory_total_bytes                            gauge    RAM of the machine
//	nv_cpu_memory_used_bytes                             gauge    RAM in use (total minus available)
//
// Every value is read at scrape time from the model versions' statistics
// (the same numbers the statistics extension reports) and from /proc, so
// the metrics and the statistics can never disagree and versions that
// unload leave no stale series.
package tritonmetrics

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// Source gives every model version's statistics; model.Manager is one.
type Source interface {
	Stats(name, version string) ([]model.Stats, error)
}

// failureReasons are the values of nv_inference_request_failure's reason
// label; every one is exported, zeros included, as Triton does.
var failureReasons = [...]string{scheduler.ReasonRejected, scheduler.ReasonCanceled, scheduler.ReasonBackend, scheduler.ReasonOther}

// Collector is the prometheus.Collector of Triton's families.
type Collector struct {
	src       Source
	cpu       *cpuSampler
	log       *slog.Logger
	latencies bool

	success, failure, count, exec, pending      *prometheus.Desc
	loadSecs                                    *prometheus.Desc
	requestUS, queueUS, inputUS, inferUS, outUS *prometheus.Desc
	cpuUtil, memTotal, memUsed                  *prometheus.Desc
}

// Config configures a Collector.
type Config struct {
	// ProcDir is where /proc is; empty means "/proc". Tests point it at a
	// fake.
	ProcDir string
	// Logger receives /proc read failures; nil discards.
	Logger *slog.Logger
	// NoCounterLatencies leaves out the nv_inference_*_duration_us
	// counters (--metrics-config counter_latencies=false).
	NoCounterLatencies bool
}

// New returns a Collector over src.
func New(src Source, cfg Config) *Collector {
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mv := []string{"model", "version"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Collector{
		src:       src,
		latencies: !cfg.NoCounterLatencies,
		cpu:       &cpuSampler{dir: cfg.ProcDir, minInterval: time.Second},
		log:       log,

		success:  d("nv_inference_request_success", "Number of successful inference requests, all batch sizes", mv),
		failure:  d("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", append(mv, "reason")),
		count:    d("nv_inference_count", "Number of inferences performed (does not include cached requests)", mv),
		exec:     d("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)", mv),
		pending:  d("nv_inference_pending_request_count", "Instantaneous number of pending requests awaiting execution per-model.", mv),
		loadSecs: d("nv_model_load_duration_secs", "Model load time in seconds", mv),

		requestUS: d("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds (includes cached requests)", mv),
		queueUS:   d("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds (includes cached requests)", mv),
		inputUS:   d("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds (does not include cached requests)", mv),
		inferUS:   d("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds (does not include cached requests)", mv),
		outUS:     d("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds (does not include cached requests)", mv),

		cpuUtil:  d("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", nil),
		memTotal: d("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", nil),
		memUsed:  d("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", nil),
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{c.success, c.failure, c.count, c.exec, c.pending, c.loadSecs,
		c.requestUS, c.queueUS, c.inputUS, c.inferUS, c.outUS, c.cpuUtil, c.memTotal, c.memUsed}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.src.Stats("", "")
	if err == nil {
		for _, st := range stats {
			c.collectModel(ch, st)
		}
	}
	if util, err := c.cpu.utilization(time.Now()); err == nil {
		ch <- prometheus.MustNewConstMetric(c.cpuUtil, prometheus.GaugeValue, util)
	} else {
		c.log.Debug("nv_cpu_utilization unavailable", "err", err)
	}
	if total, avail, err := readMemInfo(c.cpu.dir); err == nil {
		ch <- prometheus.MustNewConstMetric(c.memTotal, prometheus.GaugeValue, float64(total))
		ch <- prometheus.MustNewConstMetric(c.memUsed, prometheus.GaugeValue, float64(total-min(avail, total)))
	} else {
		c.log.Debug("nv_cpu_memory_* unavailable", "err", err)
	}
}

func (c *Collector) collectModel(ch chan<- prometheus.Metric, st model.Stats) {
	lv := []string{st.Name, st.Version}
	counter := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(lv, extra...)...)
	}
	us := func(d model.Duration) float64 { return float64(d.Total.Microseconds()) }
	counter(c.success, float64(st.Success.Count))
	for _, r := range failureReasons {
		counter(c.failure, float64(st.FailReasons[r]), r)
	}
	counter(c.count, float64(st.InferenceCount))
	counter(c.exec, float64(st.ExecutionCount))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending), lv...)
	ch <- prometheus.MustNewConstMetric(c.loadSecs, prometheus.GaugeValue, st.LoadDuration.Seconds(), lv...)
	if !c.latencies {
		return
	}
	counter(c.requestUS, us(st.Success))
	counter(c.queueUS, us(st.Queue))
	counter(c.inputUS, us(st.ComputeInput))
	counter(c.inferUS, us(st.ComputeInfer))
	counter(c.outUS, us(st.ComputeOutput))
}
