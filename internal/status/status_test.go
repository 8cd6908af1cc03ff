package status

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

// fakeSource is a health source whose snapshot the test replaces.
type fakeSource struct {
	snap atomic.Pointer[health.Snapshot]
	mu   sync.Mutex
	subs map[int]chan struct{}
	next int
}

func newFakeSource(s *health.Snapshot) *fakeSource {
	f := &fakeSource{subs: map[int]chan struct{}{}}
	f.snap.Store(s)
	return f
}

func (f *fakeSource) Snapshot() *health.Snapshot { return f.snap.Load() }

func (f *fakeSource) Subscribe() (<-chan struct{}, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{}, 1)
	id := f.next
	f.next++
	f.subs[id] = ch
	return ch, func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}
}

func (f *fakeSource) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeSource) publish(s *health.Snapshot) {
	f.snap.Store(s)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func snapshot(state health.InstanceState, pid int, reason string) *health.Snapshot {
	return &health.Snapshot{
		At: t0, Started: true, Strict: true,
		Models: []health.ModelHealth{{
			Name: "add_sub", Version: "1", State: map[bool]health.ModelState{true: health.ModelStateReady, false: health.ModelStateUnavailable}[state == health.StateReady],
			Reason:   map[bool]string{true: "", false: "0 of 1 instances routable, needs 1; add_sub_0 is " + string(state) + ": " + reason}[state == health.StateReady],
			Ready:    state == health.StateReady,
			MinReady: 1, Expected: true,
			Instances: []health.InstanceHealth{{
				Name: "add_sub_0", State: state, Reason: reason, PID: pid, Restarts: 2, LastExit: "signal SIGKILL",
				Since: t0,
				Checks: []health.CheckHealth{{Name: health.CheckHeartbeat, Passing: false, LastOK: false,
					LastMessage: "secret: no ping answer", LastAt: t0, Consecutive: 3}},
				Transitions: []health.Transition{
					{At: t0.Add(-2 * time.Second), From: health.StateStarting, To: health.StateReady, Reason: "initialized"},
					{At: t0.Add(-time.Second), From: health.StateReady, To: state, Reason: reason},
				},
			}},
		}},
	}
}

func TestBuildShowsVerdictsModelsAndTimeline(t *testing.T) {
	v := build(snapshot(health.StateUnhealthy, 42, "secret: is_healthy() returned False"), sample{}, sample{}, false, nil)
	if len(v.Verdicts) != 3 || v.Verdicts[0].Probe != "livez" || !v.Verdicts[0].OK {
		t.Fatalf("verdicts = %+v, want livez ok first", v.Verdicts)
	}
	ready := v.Verdicts[1]
	if ready.Probe != "readyz" || ready.OK || !strings.Contains(ready.Reason, "is_healthy() returned False") {
		t.Errorf("readyz verdict = %+v, want failing with the instance's reason", ready)
	}
	in := v.Models[0].Instances[0]
	if in.PID != 42 || in.State != "UNHEALTHY" || in.Restarts != 2 || in.LastExit != "signal SIGKILL" {
		t.Errorf("instance = %+v", in)
	}
	if c := in.Checks[0]; c.Name != "heartbeat" || c.OK || c.Last != "fail" || c.Streak != 3 || c.Message == "" {
		t.Errorf("check = %+v", c)
	}
	if len(v.Timeline) != 2 || !v.Timeline[0].At.After(v.Timeline[1].At) || v.Timeline[0].To != "UNHEALTHY" {
		t.Errorf("timeline = %+v, want newest first", v.Timeline)
	}
}

func TestBuildShowsRequestsInFlight(t *testing.T) {
	inFlight := func(k health.InstanceKey) (int, int) {
		if k == (health.InstanceKey{Model: "add_sub", Version: "1", Instance: "add_sub_0"}) {
			return 3, 1
		}
		return 0, 0
	}
	in := build(snapshot(health.StateReady, 1, ""), sample{}, sample{}, false, inFlight).Models[0].Instances[0]
	if in.InFlight == nil || *in.InFlight != 3 || *in.Streams != 1 {
		t.Errorf("in flight %v, streams %v; want 3 and 1", in.InFlight, in.Streams)
	}
}

func TestBuildShowsOpenSequences(t *testing.T) {
	snap := snapshot(health.StateReady, 1, "")
	snap.Models[0].Instances[0].Sequences = &health.SequenceSlots{Open: 3, Slots: 4}
	in := build(snap, sample{}, sample{}, false, nil).Models[0].Instances[0]
	if in.Sequences == nil || *in.Sequences != (SequencesView{Open: 3, Slots: 4}) {
		t.Errorf("sequences %+v, want 3 of 4", in.Sequences)
	}
	if in.Extra["Sequences"] != nil {
		t.Errorf("sequences shown twice: extra %v", in.Extra)
	}
	if in := build(snapshot(health.StateReady, 1, ""), sample{}, sample{}, false, nil).Models[0].Instances[0]; in.Sequences != nil {
		t.Errorf("sequences %+v for a model without sequence batching", in.Sequences)
	}
}

func TestBuildHidesEveryReason(t *testing.T) {
	s := snapshot(health.StateUnhealthy, 42, "secret: is_healthy() returned False")
	s.Started, s.Loading = false, "secret: loading 1/3"
	v := build(s, sample{}, sample{}, true, nil)
	b, _ := json.Marshal(v)
	if strings.Contains(string(b), "secret") {
		t.Fatalf("view with hidden reasons leaks a reason: %s", b)
	}
	if !v.ReasonsHidden || v.Models[0].Instances[0].State != "UNHEALTHY" || v.Models[0].Instances[0].PID != 42 {
		t.Errorf("states and PIDs must stay: %+v", v.Models[0].Instances[0])
	}
}

func TestBuildCapsTimeline(t *testing.T) {
	s := snapshot(health.StateReady, 1, "")
	var ts []health.Transition
	for k := range TimelineLength + 10 {
		ts = append(ts, health.Transition{At: t0.Add(time.Duration(k) * time.Millisecond), From: health.StateStarting, To: health.StateReady})
	}
	s.Models[0].Instances[0].Transitions = ts
	v := build(s, sample{}, sample{}, false, nil)
	if len(v.Timeline) != TimelineLength {
		t.Fatalf("timeline has %d items, want %d", len(v.Timeline), TimelineLength)
	}
	if want := ts[len(ts)-1].At; !v.Timeline[0].At.Equal(want) {
		t.Errorf("first item at %v, want the newest %v", v.Timeline[0].At, want)
	}
}

func TestTrafficRatesBetweenSamples(t *testing.T) {
	prev := newSample(t0, []Counters{{Model: "m", Version: "1", Requests: 10, Failures: 1, Latency: 10 * time.Millisecond, Queue: time.Millisecond, Queued: 10}})
	cur := newSample(t0.Add(2*time.Second), []Counters{{Model: "m", Version: "1", Requests: 30, Failures: 3,
		Latency: 50 * time.Millisecond, Queue: 5 * time.Millisecond, Queued: 30, Pending: 4}})
	tr := traffic(prev, cur, "m", "1")
	if tr.Rate != 11 || tr.LatencyMS != 2 || tr.QueueMS != 0.2 || tr.Pending != 4 || tr.Requests != 30 || tr.Failures != 3 {
		t.Errorf("traffic = %+v, want rate 11/s, latency 2 ms, queue 0.2 ms, 4 pending", tr)
	}
	if tr := traffic(sample{}, cur, "m", "1"); tr.Rate != 0 || tr.Pending != 4 {
		t.Errorf("without a previous sample: %+v, want no rate, pending 4", tr)
	}
	// A reload resets the counters: no negative rate.
	reloaded := newSample(t0.Add(3*time.Second), []Counters{{Model: "m", Version: "1", Requests: 1}})
	if tr := traffic(cur, reloaded, "m", "1"); tr.Rate != 0 {
		t.Errorf("after a reload: rate %v, want 0", tr.Rate)
	}
	if traffic(prev, cur, "other", "1") != nil {
		t.Error("a version without counters has no traffic")
	}
}

func TestExtraFieldsRenderUnknownSnapshotFields(t *testing.T) {
	type future struct {
		Name        string
		OpenStreams int
		Sequences   []string
		LastError   string
		Zero        int
	}
	got := extraFields(future{Name: "x", OpenStreams: 3, Sequences: []string{"a"}, LastError: "boom"}, fieldSet("Name"), false)
	if got["OpenStreams"] != float64(3) || got["LastError"] != "boom" || len(got["Sequences"].([]any)) != 1 {
		t.Errorf("extra = %v", got)
	}
	if _, ok := got["Zero"]; ok {
		t.Error("zero fields are left out")
	}
	if hidden := extraFields(future{LastError: "boom", OpenStreams: 1}, nil, true); hidden["LastError"] != nil || hidden["OpenStreams"] == nil {
		t.Errorf("with hidden reasons: %v, want free text withheld and counts kept", hidden)
	}
}

// readEvent reads one "view" event from an SSE stream.
func readEvent(t *testing.T, r *bufio.Reader) *View {
	t.Helper()
	v, err := nextView(r)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func nextView(r *bufio.Reader) (*View, error) {
	var event string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("reading the stream: %w", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "view":
			var ev struct {
				Now  time.Time
				View *View
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				return nil, fmt.Errorf("event data: %w", err)
			}
			if ev.Now.IsZero() || ev.View == nil {
				return nil, fmt.Errorf("event data without now or view: %s", line)
			}
			return ev.View, nil
		}
	}
}

func TestEventsFollowTheSnapshot(t *testing.T) {
	src := newFakeSource(snapshot(health.StateReady, 100, ""))
	page := New(src, Config{SampleInterval: time.Hour})
	srv := httptest.NewServer(page)
	defer srv.Close()
	defer page.Close()

	resp, err := http.Get(srv.URL + "/status/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	if v := readEvent(t, r); v.Models[0].Instances[0].PID != 100 {
		t.Fatalf("first event PID = %d, want 100", v.Models[0].Instances[0].PID)
	}
	src.publish(snapshot(health.StateExited, 0, "process exited: signal SIGKILL"))
	done := make(chan *View, 1)
	go func() {
		v, _ := nextView(r)
		done <- v
	}()
	select {
	case v := <-done:
		if v == nil {
			t.Fatal("the stream ended instead of sending the change")
		}
		if in := v.Models[0].Instances[0]; in.State != "EXITED" || v.Verdicts[1].OK {
			t.Errorf("after the change: instance %+v, readyz ok=%v", in, v.Verdicts[1].OK)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s of a snapshot change")
	}
}

func TestCloseEndsStreamsAndRefusesNewOnes(t *testing.T) {
	src := newFakeSource(snapshot(health.StateReady, 1, ""))
	page := New(src, Config{SampleInterval: time.Hour})
	srv := httptest.NewServer(page)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	readEvent(t, r)
	page.Close()
	ended := make(chan error, 1)
	go func() {
		_, err := r.ReadString(0)
		ended <- err
	}()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream stayed open after Close")
	}
	deadline := time.Now().Add(10 * time.Second)
	for src.subscribers() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream's subscription was not cancelled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	again, err := http.Get(srv.URL + "/status/events")
	if err != nil {
		t.Fatal(err)
	}
	again.Body.Close()
	if again.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream after Close: %d, want 503", again.StatusCode)
	}
}

func TestStreamLimit(t *testing.T) {
	src := newFakeSource(snapshot(health.StateReady, 1, ""))
	page := New(src, Config{SampleInterval: time.Hour, MaxStreams: 1})
	srv := httptest.NewServer(page)
	defer srv.Close()
	defer page.Close()
	first, err := http.Get(srv.URL + "/status/events")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	readEvent(t, bufio.NewReader(first.Body))
	second, err := http.Get(srv.URL + "/status/events")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second stream over a limit of 1: %d, want 503", second.StatusCode)
	}
}

func TestPageIsSelfContained(t *testing.T) {
	page := New(newFakeSource(nil), Config{})
	for _, path := range []string{"/", "/status"} {
		rec := httptest.NewRecorder()
		page.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Header().Get("Content-Type"))
		}
		body := rec.Body.String()
		for _, banned := range []string{"http://", "https://", "<script src", "<link "} {
			if strings.Contains(body, banned) {
				t.Errorf("GET %s: the page references %q; everything must be embedded", path, banned)
			}
		}
	}
	rec := httptest.NewRecorder()
	page.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status/view", nil))
	var v View
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || len(v.Verdicts) != 3 {
		t.Errorf("/status/view before any snapshot: %v %s", err, rec.Body)
	}
	rec = httptest.NewRecorder()
	page.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/status", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d, want 405", rec.Code)
	}
}

func TestHundredModelsView(t *testing.T) {
	s := &health.Snapshot{At: t0, Started: true}
	for k := range 100 {
		s.Models = append(s.Models, health.ModelHealth{Name: fmt.Sprintf("m%03d", k), Version: "1", State: health.ModelStateReady, Ready: true,
			Instances: []health.InstanceHealth{{Name: "i0", State: health.StateReady, PID: 1000 + k,
				Transitions: []health.Transition{{At: t0.Add(time.Duration(k) * time.Millisecond), From: health.StateStarting, To: health.StateReady}}}}})
	}
	v := build(s, sample{}, sample{}, false, nil)
	if len(v.Models) != 100 || len(v.Timeline) != TimelineLength || v.Timeline[0].Model != "m099" {
		t.Errorf("100 models: %d models, %d timeline items, newest %s", len(v.Models), len(v.Timeline), v.Timeline[0].Model)
	}
}
