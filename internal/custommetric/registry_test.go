package custommetric_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/vigilhq/vigil/internal/custommetric"
)

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestSharedSeriesOutliveOneOwner(t *testing.T) {
	r := custommetric.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	id := must[uint64](t)
	a, b := r.NewOwner(), r.NewOwner()
	fa := id(a.NewFamily("latency_ns", "first description", custommetric.Counter))
	fb := id(b.NewFamily("latency_ns", "second description", custommetric.Counter))
	ma := id(a.NewMetric(fa, map[string]string{"model": "m"}, nil))
	mb := id(b.NewMetric(fb, map[string]string{"model": "m"}, nil))
	must[float64](t)(a.Apply(ma, custommetric.Increment, 2))
	must[float64](t)(b.Apply(mb, custommetric.Increment, 3))
	if v := must[float64](t)(a.Apply(ma, custommetric.Value, 0)); v != 5 {
		t.Fatalf("value = %v, want 5: both instances share one series", v)
	}
	want := `# HELP latency_ns first description
# TYPE latency_ns counter
latency_ns{model="m"} 5
`
	compare(t, reg, "latency_ns", want)
	a.Close()
	compare(t, reg, "latency_ns", want)
	b.Close()
	compare(t, reg, "latency_ns", "")
	// The name is free again, for another kind too.
	c := r.NewOwner()
	id(c.NewFamily("latency_ns", "now a gauge", custommetric.Gauge))
}

func TestRefusals(t *testing.T) {
	r := custommetric.New()
	o := r.NewOwner()
	id := must[uint64](t)
	g := id(o.NewFamily("g", "", custommetric.Gauge))
	h := id(o.NewFamily("h", "", custommetric.Histogram))
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"kind clash", second(o.NewFamily("g", "", custommetric.Counter)), `metric family "g" already exists with kind GAUGE`},
		{"bad name", second(o.NewFamily("1abc", "", custommetric.Counter)), "not a valid Prometheus metric name"},
		{"reserved", second(o.NewFamily("vigil_x", "", custommetric.Counter)), "reserved for the server's own metrics"},
		{"bad label", second(o.NewMetric(g, map[string]string{"a-b": "x"}, nil)), `label name "a-b"`},
		{"no buckets", second(o.NewMetric(h, nil, nil)), "Missing required buckets."},
		{"unsorted buckets", second(o.NewMetric(h, nil, []float64{2, 1})), "ascending"},
		{"buckets on gauge", second(o.NewMetric(g, nil, []float64{1})), "Unexpected buckets found."},
	} {
		if !errors.Is(tc.err, custommetric.ErrInvalid) || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrInvalid containing %q", tc.name, tc.err, tc.want)
		}
	}
	hm := id(o.NewMetric(h, nil, []float64{1, 2}))
	if _, err := o.Apply(hm, custommetric.Set, 1); err == nil || !strings.Contains(err.Error(), "TRITONSERVER_METRIC_KIND_HISTOGRAM does not support Set") {
		t.Errorf("histogram set: %v", err)
	}
	// A deleted family clears its metrics.
	if err := o.DeleteFamily(h); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Apply(hm, custommetric.Observe, 1); err == nil || !strings.Contains(err.Error(), "has been deleted") {
		t.Errorf("observe after family delete: %v", err)
	}
}

func TestHistogramBuckets(t *testing.T) {
	r := custommetric.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	o := r.NewOwner()
	f := must[uint64](t)(o.NewFamily("size", "sizes", custommetric.Histogram))
	m := must[uint64](t)(o.NewMetric(f, nil, []float64{1, 10}))
	for _, v := range []float64{0.5, 1, 5, 100} {
		must[float64](t)(o.Apply(m, custommetric.Observe, v))
	}
	want := `# HELP size sizes
# TYPE size histogram
size_bucket{le="1"} 2
size_bucket{le="10"} 3
size_bucket{le="+Inf"} 4
size_sum 106.5
size_count 4
`
	compare(t, reg, "size", want)
}

func TestSeriesLimit(t *testing.T) {
	r := custommetric.New()
	o := r.NewOwner()
	f := must[uint64](t)(o.NewFamily("per_request", "", custommetric.Gauge))
	for i := range custommetric.MaxSeries {
		must[uint64](t)(o.NewMetric(f, map[string]string{"id": string(rune('a'+i%26)) + strings.Repeat("x", i/26)}, nil))
	}
	if _, err := o.NewMetric(f, map[string]string{"id": "one too many"}, nil); err == nil || !strings.Contains(err.Error(), "the limit") {
		t.Fatalf("series over the limit: err = %v", err)
	}
}

// exposition renders the families named name in the text format.
func exposition(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if mf.GetName() == name {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.String()
}

func compare(t *testing.T, reg *prometheus.Registry, name, want string) {
	t.Helper()
	if got := exposition(t, reg, name); got != want {
		t.Fatalf("exposition of %s:\n%s\nwant:\n%s", name, got, want)
	}
}

func second[T any](_ T, err error) error { return err }
