// Package custommetric holds the metrics that models create through
// triton_python_backend_utils.MetricFamily and Metric, and exports them with
// the server's own on /metrics.
//
// A family is known by its name across the whole server, as in Triton: a
// second MetricFamily with the same name and kind shares the first (whose
// description wins), one with another kind is refused. Within a family, a
// metric is known by its label set: instances that create the same labels
// share one series. Everything a stub creates belongs to that stub's Owner;
// when the stub ends (an unload, a restart, a crash) its Owner is closed and
// what no other stub still holds disappears from /metrics, so a model that
// is gone leaves no stale series behind.
package custommetric

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is a family's metric type.
type Kind string

// The kinds pb_utils.MetricFamily offers.
const (
	Counter   Kind = "COUNTER"
	Gauge     Kind = "GAUGE"
	Histogram Kind = "HISTOGRAM"
)

// ErrInvalid is wrapped by errors about what the model asked for (a bad
// name, a wrong kind, an operation the kind does not support).
var ErrInvalid = errors.New("invalid metric operation")

// metricName and labelName are Prometheus's rules for names.
var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// reservedPrefixes belong to the server's own metrics: a model family of
// such a name would collide with them and break the whole scrape.
var reservedPrefixes = []string{"vigil_", "nv_", "go_", "process_", "promhttp_"}

// MaxSeries bounds the series of all families together, so that a model
// putting, say, a request id into a label cannot grow the server's memory
// and the scrape without limit.
const MaxSeries = 10000

// Registry holds every model-created family. It is a prometheus.Collector
// (an unchecked one: families come and go with the models).
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
	series   int // total series
}

type family struct {
	name, help string
	kind       Kind
	refs       int // MetricFamily handles
	series     map[string]*series
}

type series struct {
	fam    *family
	key    string
	labels map[string]string
	refs   int // Metric handles

	value float64 // counter, gauge
	// histogram
	buckets []float64 // upper bounds, ascending
	counts  []uint64  // per bucket, not cumulative
	count   uint64
	sum     float64
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{families: map[string]*family{}}
}

// Describe sends nothing: the registry is an unchecked collector.
func (r *Registry) Describe(chan<- *prometheus.Desc) {}

// Collect sends one metric per series.
func (r *Registry) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.families {
		for _, s := range f.series {
			names := slices.Sorted(maps.Keys(s.labels))
			values := make([]string, len(names))
			for i, n := range names {
				values[i] = s.labels[n]
			}
			desc := prometheus.NewDesc(f.name, f.help, names, nil)
			var m prometheus.Metric
			var err error
			switch f.kind {
			case Counter:
				m, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, s.value, values...)
			case Gauge:
				m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.value, values...)
			case Histogram:
				cum := make(map[float64]uint64, len(s.buckets))
				var c uint64
				for i, b := range s.buckets {
					c += s.counts[i]
					cum[b] = c
				}
				m, err = prometheus.NewConstHistogram(desc, s.count, s.sum, cum, values...)
			}
			if err != nil {
				m = prometheus.NewInvalidMetric(desc, err)
			}
			ch <- m
		}
	}
}

// Owner is what one stub process holds: the families and metrics it
// created, by the ids it was given.
type Owner struct {
	r      *Registry
	mu     sync.Mutex
	nextID uint64
	fams   map[uint64]*family
	mets   map[uint64]*series
	closed bool
}

// NewOwner starts the holdings of one stub.
func (r *Registry) NewOwner() *Owner {
	return &Owner{r: r, fams: map[uint64]*family{}, mets: map[uint64]*series{}}
}

// invalidError is an ErrInvalid whose message is only the explanation,
// worded as Triton words it, because models see it.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// ParseKind accepts COUNTER, GAUGE and HISTOGRAM.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case Counter, Gauge, Histogram:
		return k, nil
	}
	return "", invalidf("unknown metric kind %q: want COUNTER, GAUGE or HISTOGRAM", s)
}

// NewFamily creates (or shares) the family name and returns its id.
func (o *Owner) NewFamily(name, help string, kind Kind) (uint64, error) {
	if !metricName.MatchString(name) {
		return 0, invalidf("metric family name %q is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", name)
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p) {
			return 0, invalidf("metric family name %q: the prefix %q is reserved for the server's own metrics", name, p)
		}
	}
	if _, err := ParseKind(string(kind)); err != nil {
		return 0, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, invalidf("the model instance is stopping")
	}
	r := o.r
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.families[name]
	switch {
	case f == nil:
		f = &family{name: name, help: help, kind: kind, series: map[string]*series{}}
		r.families[name] = f
	case f.kind != kind:
		return 0, invalidf("metric family %q already exists with kind %s, cannot create it as %s", name, f.kind, kind)
	}
	f.refs++
	o.nextID++
	o.fams[o.nextID] = f
	return o.nextID, nil
}

// DeleteFamily drops a family handle. Metrics created from it are cleared
// (Triton's rule): later operations on them fail.
func (o *Owner) DeleteFamily(id uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.fams[id]
	if !ok {
		return invalidf("no metric family with id %d", id)
	}
	delete(o.fams, id)
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	for mid, s := range o.mets {
		if s.fam == f {
			delete(o.mets, mid)
			o.r.releaseSeriesLocked(s)
		}
	}
	o.r.releaseFamilyLocked(f)
	return nil
}

// NewMetric creates (or shares) the series of family familyID with labels.
// buckets are required for histograms and refused otherwise.
func (o *Owner) NewMetric(familyID uint64, labels map[string]string, buckets []float64) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.fams[familyID]
	if !ok {
		return 0, invalidf("no metric family with id %d", familyID)
	}
	for n := range labels {
		if !labelName.MatchString(n) || strings.HasPrefix(n, "__") {
			return 0, invalidf("label name %q is not a valid Prometheus label name", n)
		}
	}
	switch {
	case f.kind == Histogram && buckets == nil:
		return 0, invalidf("Missing required buckets.")
	case f.kind != Histogram && buckets != nil:
		return 0, invalidf("Unexpected buckets found.")
	}
	if f.kind == Histogram {
		for i, b := range buckets {
			if math.IsNaN(b) || (i > 0 && b <= buckets[i-1]) {
				return 0, invalidf("histogram buckets must be ascending numbers, got %v", buckets)
			}
		}
	}
	key := labelKey(labels)
	r := o.r
	r.mu.Lock()
	defer r.mu.Unlock()
	s := f.series[key]
	if s == nil {
		if r.series >= MaxSeries {
			return 0, invalidf("the server holds %d custom metric series already (the limit)", MaxSeries)
		}
		s = &series{fam: f, key: key, labels: maps.Clone(labels)}
		if s.labels == nil {
			s.labels = map[string]string{}
		}
		if f.kind == Histogram {
			s.buckets = slices.Clone(buckets)
			s.counts = make([]uint64, len(buckets))
		}
		f.series[key] = s
		r.series++
	} else if f.kind == Histogram && !slices.Equal(s.buckets, buckets) {
		return 0, invalidf("metric %s%s already exists with buckets %v", f.name, key, s.buckets)
	}
	s.refs++
	o.nextID++
	o.mets[o.nextID] = s
	return o.nextID, nil
}

// labelKey renders a label set canonically: {a="x",b="y"}.
func labelKey(labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", n, labels[n])
	}
	b.WriteByte('}')
	return b.String()
}

// DeleteMetric drops a metric handle.
func (o *Owner) DeleteMetric(id uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.mets[id]
	if !ok {
		return nil // already cleared with its family
	}
	delete(o.mets, id)
	o.r.mu.Lock()
	o.r.releaseSeriesLocked(s)
	o.r.mu.Unlock()
	return nil
}

// errCleared is Triton's message for a Metric whose family was deleted.
const errCleared = "Invalid metric operation as the corresponding 'MetricFamily' has been deleted. " +
	"The 'MetricFamily' object should be deleted AFTER its corresponding 'Metric' objects have been deleted."

// Op is an operation on a metric's value.
type Op string

// The operations of pb_utils.Metric.
const (
	Increment Op = "increment"
	Set       Op = "set"
	Observe   Op = "observe"
	Value     Op = "value"
)

// Apply runs op on metric id and returns the metric's value (for Value).
// The errors read as Triton's.
func (o *Owner) Apply(id uint64, op Op, v float64) (float64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.mets[id]
	if !ok {
		return 0, invalidf(errCleared)
	}
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	kind := s.fam.kind
	unsupported := func() (float64, error) {
		name := string(op)
		name = strings.ToUpper(name[:1]) + name[1:]
		return 0, invalidf("TRITONSERVER_METRIC_KIND_%s does not support %s", kind, name)
	}
	switch op {
	case Increment:
		switch kind {
		case Counter:
			if v < 0 {
				return 0, invalidf("TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by non-negative values.")
			}
			s.value += v
		case Gauge:
			s.value += v
		default:
			return unsupported()
		}
	case Set:
		if kind != Gauge {
			return unsupported()
		}
		s.value = v
	case Observe:
		if kind != Histogram {
			return unsupported()
		}
		i := sort.SearchFloat64s(s.buckets, v) // first bound ≥ v
		if i < len(s.buckets) {
			s.counts[i]++
		}
		s.count++
		s.sum += v
	case Value:
		if kind == Histogram {
			return unsupported()
		}
		return s.value, nil
	default:
		return 0, invalidf("unknown metric operation %q", op)
	}
	return 0, nil
}

// Close releases everything the owner holds. Later calls fail.
func (o *Owner) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = true
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	for _, s := range o.mets {
		o.r.releaseSeriesLocked(s)
	}
	for _, f := range o.fams {
		o.r.releaseFamilyLocked(f)
	}
	o.mets, o.fams = map[uint64]*series{}, map[uint64]*family{}
}

func (r *Registry) releaseSeriesLocked(s *series) {
	s.refs--
	if s.refs > 0 {
		return
	}
	if s.fam.series[s.key] == s {
		delete(s.fam.series, s.key)
		r.series--
	}
	r.dropIdleFamilyLocked(s.fam)
}

func (r *Registry) releaseFamilyLocked(f *family) {
	f.refs--
	r.dropIdleFamilyLocked(f)
}

func (r *Registry) dropIdleFamilyLocked(f *family) {
	if f.refs <= 0 && len(f.series) == 0 && r.families[f.name] == f {
		delete(r.families, f.name)
	}
}
