package status

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

// View is what the page renders: one health snapshot and one traffic
// sample, as JSON. The page is a pure renderer of it.
type View struct {
	At       time.Time `json:"at"`
	Started  bool      `json:"started"`
	Draining bool      `json:"draining"`
	Loading  string    `json:"loading,omitempty"`
	// ReasonsHidden is set with --health-hide-reasons: every free-text
	// reason and message is withheld; states, counts and times stay.
	ReasonsHidden bool           `json:"reasons_hidden"`
	Verdicts      []Verdict      `json:"verdicts"`
	Models        []ModelView    `json:"models"`
	Timeline      []TimelineItem `json:"timeline"`
}

// Verdict is one probe's answer with the checks behind it.
type Verdict struct {
	Probe  string      `json:"probe"`
	OK     bool        `json:"ok"`
	Reason string      `json:"reason,omitempty"`
	Checks []CheckView `json:"checks"`
}

// CheckView is one named check of a probe, or one check of an instance.
type CheckView struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Reason  string `json:"reason,omitempty"`
	Last    string `json:"last,omitempty"` // raw last result: pass, fail or none
	Streak  int    `json:"streak,omitempty"`
	Message string `json:"message,omitempty"`
}

// ModelView is one model version.
type ModelView struct {
	Name      string         `json:"name"`
	Version   string         `json:"version"`
	State     string         `json:"state"`
	Reason    string         `json:"reason,omitempty"`
	Ready     bool           `json:"ready"`
	Degraded  bool           `json:"degraded"`
	Routable  int            `json:"routable"`
	MinReady  int            `json:"min_ready"`
	Traffic   *TrafficView   `json:"traffic,omitempty"`
	Instances []InstanceView `json:"instances"`
	// Extra holds snapshot fields this page has no column for, rendered
	// generically as name: value.
	Extra map[string]any `json:"extra,omitempty"`
}

// InstanceView is one instance.
type InstanceView struct {
	Name     string      `json:"name"`
	State    string      `json:"state"`
	Reason   string      `json:"reason,omitempty"`
	Since    *time.Time  `json:"since,omitempty"`
	Routable bool        `json:"routable"`
	PID      int         `json:"pid,omitempty"`
	Restarts int         `json:"restarts"`
	LastExit string      `json:"last_exit,omitempty"`
	Checks   []CheckView `json:"checks"`
	// InFlight counts the requests the instance holds now, Streams those
	// of them that are streams (decoupled); nil when not known.
	InFlight *int `json:"in_flight,omitempty"`
	Streams  *int `json:"streams,omitempty"`
	// Sequences are the open sequences and slots of an instance of a
	// sequence batching model; nil for other models.
	Sequences *SequencesView `json:"sequences,omitempty"`
	Extra     map[string]any `json:"extra,omitempty"`
}

// SequencesView is an instance's share of its model's sequences.
type SequencesView struct {
	Open  int `json:"open"`
	Slots int `json:"slots"`
}

// TrafficView is a model version's traffic over the last sample interval.
type TrafficView struct {
	// Rate is requests per second (successes and failures).
	Rate float64 `json:"rate"`
	// LatencyMS is the mean request latency, queueing included, of the
	// requests that succeeded in the interval; QueueMS the mean time they
	// waited in the queue.
	LatencyMS float64 `json:"latency_ms"`
	QueueMS   float64 `json:"queue_ms"`
	// Pending is the number of requests waiting in the queue now.
	Pending  int   `json:"pending"`
	Requests int64 `json:"requests"` // since the version loaded
	Failures int64 `json:"failures"`
}

// TimelineItem is one instance state change.
type TimelineItem struct {
	At       time.Time `json:"at"`
	Model    string    `json:"model"`
	Version  string    `json:"version"`
	Instance string    `json:"instance"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Reason   string    `json:"reason,omitempty"`
}

// TimelineLength is how many transitions the timeline keeps, newest first.
const TimelineLength = 60

// Counters are one model version's cumulative traffic counters.
type Counters struct {
	Model, Version string
	Requests       int64         // requests that succeeded
	Failures       int64         // requests that failed
	Latency        time.Duration // total latency of the successes
	Queue          time.Duration // total queue time of the successes
	Queued         int64         // successes with a queue time
	Pending        int           // waiting in the queue now
}

// sample is a set of counters taken at one time.
type sample struct {
	at       time.Time
	counters map[[2]string]Counters
}

func newSample(at time.Time, cs []Counters) sample {
	s := sample{at: at, counters: make(map[[2]string]Counters, len(cs))}
	for _, c := range cs {
		s.counters[[2]string{c.Model, c.Version}] = c
	}
	return s
}

// traffic derives a version's rates from two samples; prev may be empty.
func traffic(prev, cur sample, model, version string) *TrafficView {
	key := [2]string{model, version}
	c, ok := cur.counters[key]
	if !ok {
		return nil
	}
	t := &TrafficView{Pending: c.Pending, Requests: c.Requests, Failures: c.Failures}
	p, ok := prev.counters[key]
	if !ok || c.Requests < p.Requests || c.Failures < p.Failures {
		// No earlier sample, or the version was reloaded: no rate yet.
		return t
	}
	if dt := cur.at.Sub(prev.at).Seconds(); dt > 0 {
		t.Rate = float64(c.Requests-p.Requests+c.Failures-p.Failures) / dt
	}
	if n := c.Requests - p.Requests; n > 0 {
		t.LatencyMS = ms(c.Latency-p.Latency) / float64(n)
	}
	if n := c.Queued - p.Queued; n > 0 {
		t.QueueMS = ms(c.Queue-p.Queue) / float64(n)
	}
	return t
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// inFlightFunc gives an instance's requests in flight and streams.
type inFlightFunc func(health.InstanceKey) (requests, streams int)

// build turns a snapshot and two traffic samples (and, when inFlight is
// set, the instances' requests in flight) into the view.
func build(snap *health.Snapshot, prev, cur sample, hide bool, inFlight inFlightFunc) *View {
	reason := func(s string) string {
		if hide {
			return ""
		}
		return s
	}
	v := &View{
		At: snap.At, Started: snap.Started, Draining: snap.Draining, Loading: reason(snap.Loading),
		ReasonsHidden: hide,
		Verdicts:      make([]Verdict, 0, 3),
		Models:        make([]ModelView, 0, len(snap.Models)),
		Timeline:      []TimelineItem{},
	}
	for _, p := range []health.Probe{health.ProbeLive, health.ProbeReady, health.ProbeStartup} {
		vd := Verdict{Probe: string(p), OK: true, Checks: []CheckView{}}
		for _, c := range snap.Checks(p) {
			vd.Checks = append(vd.Checks, CheckView{Name: c.Name, OK: c.OK, Reason: reason(c.Reason)})
			if !c.OK && vd.OK {
				vd.OK, vd.Reason = false, reason(c.Reason)
			}
		}
		v.Verdicts = append(v.Verdicts, vd)
	}
	for _, m := range snap.Models {
		mv := ModelView{
			Name: m.Name, Version: m.Version, State: string(m.State), Reason: reason(m.Reason),
			Ready: m.Ready, Degraded: m.Degraded, Routable: m.Routable(), MinReady: m.MinReady,
			Traffic:   traffic(prev, cur, m.Name, m.Version),
			Instances: make([]InstanceView, 0, len(m.Instances)),
			Extra:     extraFields(m, modelFields, hide),
		}
		if !m.Ready && m.State == health.ModelStateReady && !hide {
			_, mv.Reason, _ = snap.ModelReady(m.Name, m.Version)
		}
		for _, in := range m.Instances {
			iv := InstanceView{
				Name: in.Name, State: string(in.State), Reason: reason(in.Reason), Since: timePtr(in.Since),
				Routable: in.Routable(), PID: in.PID, Restarts: in.Restarts, LastExit: in.LastExit,
				Checks: make([]CheckView, 0, len(in.Checks)),
				Extra:  extraFields(in, instanceFields, hide),
			}
			if sq := in.Sequences; sq != nil {
				iv.Sequences = &SequencesView{Open: sq.Open, Slots: sq.Slots}
			}
			if inFlight != nil {
				n, st := inFlight(health.InstanceKey{Model: m.Name, Version: m.Version, Instance: in.Name})
				iv.InFlight, iv.Streams = &n, &st
			}
			for _, c := range in.Checks {
				iv.Checks = append(iv.Checks, CheckView{
					Name: string(c.Name), OK: c.Passing, Last: c.LastResult(), Streak: c.Consecutive, Message: reason(c.LastMessage),
				})
			}
			for _, t := range in.Transitions {
				v.Timeline = append(v.Timeline, TimelineItem{
					At: t.At, Model: m.Name, Version: m.Version, Instance: in.Name,
					From: string(t.From), To: string(t.To), Reason: reason(t.Reason),
				})
			}
			mv.Instances = append(mv.Instances, iv)
		}
		v.Models = append(v.Models, mv)
	}
	sort.SliceStable(v.Timeline, func(i, j int) bool { return v.Timeline[i].At.After(v.Timeline[j].At) })
	if len(v.Timeline) > TimelineLength {
		v.Timeline = v.Timeline[:TimelineLength]
	}
	return v
}

// The snapshot fields the page has columns for; any other field of a model
// or instance goes to Extra.
var (
	modelFields    = fieldSet("Name", "Version", "State", "Reason", "Ready", "Degraded", "Routable", "MinReady", "Expected", "Instances")
	instanceFields = fieldSet("Name", "State", "Reason", "Since", "Routable", "PID", "Restarts", "LastExit", "Checks",
		"Transitions", "FailingSince", "RestartAt", "Sequences")
)

func fieldSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// extraFields returns the fields of v (a snapshot struct) that known does
// not list and that are not zero. With hide, fields whose name says they
// carry free text (Reason, Message, Error) are withheld.
func extraFields(v any, known map[string]bool, hide bool) map[string]any {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var all map[string]any
	if json.Unmarshal(raw, &all) != nil {
		return nil
	}
	var out map[string]any
	for k, val := range all {
		if known[k] || isZero(val) {
			continue
		}
		if hide && freeText(k) {
			continue
		}
		if out == nil {
			out = map[string]any{}
		}
		out[k] = val
	}
	return out
}

func freeText(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "reason") || strings.Contains(n, "message") || strings.Contains(n, "error")
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case float64:
		return x == 0
	case string:
		return x == "" || x == "0001-01-01T00:00:00Z"
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
