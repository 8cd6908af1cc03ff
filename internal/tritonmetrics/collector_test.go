package tritonmetrics

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/scheduler"
)

type fakeSource []model.Stats

func (f fakeSource) Stats(string, string) ([]model.Stats, error) { return f, nil }

func fakeProc(t *testing.T, stat, meminfo string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"stat": stat, "meminfo": meminfo} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const fakeMeminfo = "MemTotal:       8000 kB\nMemFree:        1000 kB\nMemAvailable:   6000 kB\n"

func sample() model.Stats {
	return model.Stats{
		Name: "add_sub", Version: "1",
		Counters: model.Counters{
			InferenceCount: 12, ExecutionCount: 5,
			Success:       model.Duration{Count: 10, Total: 10 * time.Millisecond},
			Queue:         model.Duration{Count: 10, Total: 2 * time.Millisecond},
			ComputeInput:  model.Duration{Count: 10, Total: 300 * time.Microsecond},
			ComputeInfer:  model.Duration{Count: 10, Total: 7 * time.Millisecond},
			ComputeOutput: model.Duration{Count: 10, Total: 150 * time.Microsecond},
			FailReasons:   map[string]int64{"BACKEND": 2, "REJECTED": 1},
		},
		Pending:      3,
		LoadDuration: 1500 * time.Millisecond,
	}
}

func gather(t *testing.T, c *Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// TestFamiliesMatchTriton diffs the exported names, types and label names
// against the reference written from Triton's definitions.
func TestFamiliesMatchTriton(t *testing.T) {
	f, err := os.Open("testdata/triton_families.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		want[fs[0]] = fs[1] + " " + fs[2]
	}
	c := New(fakeSource{sample()}, Config{ProcDir: fakeProc(t, "cpu 10 0 10 80 0 0 0 0 0 0\n", fakeMeminfo)})
	got := map[string]string{}
	for name, mf := range gather(t, c) {
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		slices.Sort(labels)
		ls := strings.Join(labels, ",")
		if ls == "" {
			ls = "-"
		}
		got[name] = strings.ToLower(mf.GetType().String()) + " " + ls
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %q, want %q (Triton's)", name, got[name], w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is exported but not in the reference", name)
		}
	}
}

func value(mf *dto.MetricFamily, labels map[string]string) float64 {
	for _, m := range mf.GetMetric() {
		match := true
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	return -1
}

func TestValuesAndUnits(t *testing.T) {
	proc := fakeProc(t, "cpu 10 0 10 80 0 0 0 0 0 0\ncpu0 1 1 1 1\n", fakeMeminfo)
	c := New(fakeSource{sample()}, Config{ProcDir: proc})
	mfs := gather(t, c)
	mv := map[string]string{"model": "add_sub", "version": "1"}
	checks := map[string]float64{
		"nv_inference_request_success":            10,
		"nv_inference_count":                      12,
		"nv_inference_exec_count":                 5,
		"nv_inference_pending_request_count":      3,
		"nv_model_load_duration_secs":             1.5,
		"nv_inference_request_duration_us":        10000,
		"nv_inference_queue_duration_us":          2000,
		"nv_inference_compute_input_duration_us":  300,
		"nv_inference_compute_infer_duration_us":  7000,
		"nv_inference_compute_output_duration_us": 150,
		"nv_cpu_memory_total_bytes":               8000 * 1024,
		"nv_cpu_memory_used_bytes":                2000 * 1024,
		"nv_cpu_utilization":                      0.2, // 20 busy of 100 jiffies since boot
	}
	for name, want := range checks {
		if got := value(mfs[name], mv); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for reason, want := range map[string]float64{"BACKEND": 2, "REJECTED": 1, "CANCELED": 0, "OTHER": 0} {
		l := map[string]string{"model": "add_sub", "version": "1", "reason": reason}
		if got := value(mfs["nv_inference_request_failure"], l); got != want {
			t.Errorf("failure{reason=%s} = %v, want %v", reason, got, want)
		}
	}
}

func TestCPUUtilizationBetweenSamples(t *testing.T) {
	dir := fakeProc(t, "cpu 10 0 10 80 0 0 0 0\n", fakeMeminfo)
	s := &cpuSampler{dir: dir, minInterval: time.Second}
	t0 := time.Unix(1000, 0)
	if u, err := s.utilization(t0); err != nil || u != 0.2 {
		t.Fatalf("first sample = %v, %v; want 0.2 since boot", u, err)
	}
	// 60 busy (user+system+irq) and 40 idle/iowait jiffies later.
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte("cpu 50 0 20 100 20 0 10 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.utilization(t0.Add(500 * time.Millisecond)); u != 0.2 {
		t.Errorf("a sample within minInterval = %v, want the last value 0.2", u)
	}
	if u, _ := s.utilization(t0.Add(2 * time.Second)); u != 0.6 {
		t.Errorf("utilization over the interval = %v, want 0.6", u)
	}
}

func TestMissingProcIsSkipped(t *testing.T) {
	c := New(fakeSource{sample()}, Config{ProcDir: filepath.Join(t.TempDir(), "none")})
	mfs := gather(t, c)
	if _, ok := mfs["nv_cpu_utilization"]; ok {
		t.Error("nv_cpu_utilization exported without /proc/stat")
	}
	if _, ok := mfs["nv_inference_count"]; !ok {
		t.Error("model families missing when /proc is unreadable")
	}
}

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions(nil)
	if err != nil || !o.CounterLatencies || o.HistogramLatencies || o.SummaryLatencies || len(o.Quantiles) != 5 {
		t.Errorf("defaults = %+v, %v; want Triton's", o, err)
	}
	o, err = ParseOptions([]string{"counter_latencies=false", "summary_latencies=true", "histogram_latencies=true", "summary_quantiles=0.5:0.05,0.99:0.001"})
	if err != nil || o.CounterLatencies || !o.SummaryLatencies || !o.HistogramLatencies || o.Quantiles[0.99] != 0.001 || len(o.Quantiles) != 2 {
		t.Errorf("ParseOptions = %+v, %v", o, err)
	}
	for _, bad := range []string{"summary_latencies", "summary_latencies=maybe", "cache_latencies=true", "summary_quantiles=2:0.1"} {
		if _, err := ParseOptions([]string{bad}); err == nil {
			t.Errorf("ParseOptions(%q) accepted", bad)
		}
	}
}

func TestLatencyFamilies(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	o := DefaultOptions()
	o.SummaryLatencies, o.HistogramLatencies = true, true
	l := NewLatencies(reg, o)
	obs := l.For("m", "1")
	obs.Observe(scheduler.Observation{Total: 1500 * time.Millisecond, Queue: time.Millisecond, Input: 2 * time.Microsecond, Infer: time.Second, Output: 3 * time.Microsecond})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	h := got["nv_inference_first_response_histogram_ms"]
	if h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("no first response histogram: %v", got)
	}
	hist := h.GetMetric()[0].GetHistogram()
	if hist.GetSampleSum() != 1500 || len(hist.GetBucket()) != 4 || hist.GetBucket()[2].GetCumulativeCount() != 1 || hist.GetBucket()[1].GetCumulativeCount() != 0 {
		t.Errorf("histogram = %v", hist)
	}
	for name, want := range map[string]float64{"nv_inference_request_summary_us": 1.5e6, "nv_inference_queue_summary_us": 1000,
		"nv_inference_compute_input_summary_us": 2, "nv_inference_compute_infer_summary_us": 1e6, "nv_inference_compute_output_summary_us": 3} {
		mf := got[name]
		if mf == nil || mf.GetType() != dto.MetricType_SUMMARY || mf.GetMetric()[0].GetSummary().GetSampleSum() != want {
			t.Errorf("%s = %v, want a summary of sum %v", name, mf, want)
		}
	}
	if (&Latencies{}).For("m", "1") != nil || NewLatencies(prometheus.NewRegistry(), DefaultOptions()).For("m", "1") != nil {
		t.Error("an observer exists with every latency family off")
	}
}
