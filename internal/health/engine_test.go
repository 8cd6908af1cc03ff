package health

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/vigilhq/vigil/internal/health/healthtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait on the engine's goroutine; it is a guard
// against hangs, never a sleep: the waits return as soon as the condition
// holds.
const testTimeout = 10 * time.Second

// recorder is an Actuator that records calls and can react to them.
type recorder struct {
	mu        sync.Mutex
	calls     []string
	ch        chan string
	onRestart func(k InstanceKey, reason string)
	// onRoutable, when set, sees every SetRoutable call as it is made.
	onRoutable func(k InstanceKey, on bool, serving int)
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 1000)} }

func (r *recorder) record(c string) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	r.ch <- c
}

func (r *recorder) SetRoutable(k InstanceKey, on bool, serving int) {
	if r.onRoutable != nil {
		r.onRoutable(k, on, serving)
	}
	if on {
		r.record("routable " + k.Instance)
	} else {
		r.record("unroutable " + k.Instance)
	}
}

func (r *recorder) Restart(k InstanceKey, reason string) {
	r.record("restart " + k.Instance)
	if r.onRestart != nil {
		r.onRestart(k, reason)
	}
}

func (r *recorder) Fail(k InstanceKey, reason string) { r.record("fail " + k.Instance) }

// expect waits for the next actuator call and checks it.
func (r *recorder) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r.ch:
		if got != want {
			t.Fatalf("actuator call = %q, want %q", got, want)
		}
	case <-time.After(testTimeout):
		t.Fatalf("no actuator call, want %q", want)
	}
}

type engineFixture struct {
	e     *Engine
	clock *healthtest.Clock
	act   *recorder
	reg   *prometheus.Registry
	logs  *syncBuffer
}

func newEngine(t *testing.T, mod func(*EngineConfig)) *engineFixture {
	t.Helper()
	f := &engineFixture{
		clock: healthtest.NewClock(t0),
		act:   newRecorder(),
		reg:   prometheus.NewRegistry(),
		logs:  &syncBuffer{},
	}
	cfg := EngineConfig{
		Actuator:   f.act,
		Clock:      f.clock,
		Logger:     slog.New(slog.NewJSONHandler(f.logs, nil)),
		Registerer: f.reg,
		Strict:     true,
		Escalate:   true,
	}
	if mod != nil {
		mod(&cfg)
	}
	f.e = NewEngine(cfg)
	t.Cleanup(f.e.Close)
	return f
}

// waitFor waits until cond holds for the current Snapshot, woken by the
// engine's own change notifications.
func waitFor(t *testing.T, e *Engine, what string, cond func(*Snapshot) bool) *Snapshot {
	t.Helper()
	ch, cancel := e.Subscribe()
	defer cancel()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		if s := e.Snapshot(); cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; snapshot: %+v", what, e.Snapshot())
		}
	}
}

func instanceIs(name string, st InstanceState) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		m, ok := s.Model(testModel, testVersion)
		if !ok {
			return false
		}
		for _, in := range m.Instances {
			if in.Name == name {
				return in.State == st
			}
		}
		return false
	}
}

// bringUp loads model m with the given instances and waits until the
// server is ready.
func (f *engineFixture) bringUp(t *testing.T, pol Policy, instances ...string) {
	t.Helper()
	f.e.Post(loading(pol, instances...))
	for i, name := range instancesOrDefault(instances) {
		f.e.Post(spawned(100 + i).on(name))
		f.e.Post(initialized().on(name))
	}
	f.e.Post(modelEv(ModelLoaded))
	f.e.Post(Event{Kind: StartupComplete})
	waitFor(t, f.e, "server ready", func(s *Snapshot) bool { ok, _ := s.Ready(); return ok })
	for _, name := range instancesOrDefault(instances) {
		f.act.expect(t, "routable "+name)
	}
}

func instancesOrDefault(in []string) []string {
	if len(in) == 0 {
		return []string{"m_0"}
	}
	return in
}

func TestEngineSnapshotBeforeStart(t *testing.T) {
	f := newEngine(t, nil)
	s := f.e.Snapshot()
	if s.Started || !s.Strict || !s.Escalate || s.WatchdogStalled {
		t.Fatalf("initial snapshot = %+v", s)
	}
	if live, _ := s.Live(); !live {
		t.Fatal("liveness must pass before anything loaded")
	}
	if ready, _ := s.Ready(); ready {
		t.Fatal("readiness must fail before start-up completes")
	}
}

func TestEnginePostUpdatesSnapshot(t *testing.T) {
	f := newEngine(t, nil)
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil))
	s := f.e.Snapshot()
	if ready, reason, found := s.ModelReady(testModel, ""); !ready || !found {
		t.Fatalf("ModelReady = %v %q %v", ready, reason, found)
	}
	f.e.Post(exited(1))
	f.act.expect(t, "unroutable m_0")
	f.act.expect(t, "restart m_0")
	s = waitFor(t, f.e, "restarting", instanceIs("m_0", StateRestarting))
	if ready, _ := s.Ready(); ready {
		t.Fatal("server ready with its only model's instance gone")
	}
}

// An instance goes into traffic before the snapshot that reports it
// routable is published, and out of it after the one that reports it not:
// a client that reads a model ready finds its queue taking requests.
func TestEngineRoutesBeforeReportingReady(t *testing.T) {
	f := newEngine(t, nil)
	type call struct {
		on                 bool
		serving, published int
	}
	var mu sync.Mutex
	var calls []call
	f.act.onRoutable = func(_ InstanceKey, on bool, serving int) {
		published := 0
		if m, ok := f.e.Snapshot().Model(testModel, testVersion); ok {
			published = m.Routable()
		}
		mu.Lock()
		calls = append(calls, call{on, serving, published})
		mu.Unlock()
	}
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil))
	f.e.Post(exited(1))
	f.act.expect(t, "unroutable m_0")
	mu.Lock()
	defer mu.Unlock()
	want := []call{{on: true, serving: 1, published: 0}, {on: false, serving: 0, published: 0}}
	if !slices.Equal(calls, want) {
		t.Fatalf("SetRoutable calls (with the routable count published at each) = %+v, want %+v", calls, want)
	}
}

func TestEngineSubscribe(t *testing.T) {
	f := newEngine(t, nil)
	f.e.Start(context.Background())
	ch, cancel := f.e.Subscribe()
	f.e.Post(loading(testPolicy(nil)))
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatal("no notification")
	}
	cancel()
	cancel() // idempotent
	f.e.Post(spawned(100))
	waitFor(t, f.e, "spawned", func(s *Snapshot) bool { return len(s.Models) == 1 && s.Models[0].Instances[0].PID == 100 })
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

func TestEngineSubscribeKeepsOnlyLatest(t *testing.T) {
	f := newEngine(t, nil)
	ch, cancel := f.e.Subscribe()
	defer cancel()
	for range 5 {
		f.e.notify()
	}
	if len(ch) != 1 {
		t.Fatalf("pending notifications = %d, want 1", len(ch))
	}
}

// TestEngineActuatorReentrancy: the Actuator posts events back and reads
// the snapshot from inside its calls, as the model manager does when it
// restarts a process.
func TestEngineActuatorReentrancy(t *testing.T) {
	f := newEngine(t, nil)
	pid := 200
	f.act.onRestart = func(k InstanceKey, _ string) {
		_ = f.e.Snapshot()
		f.e.Post(Event{Kind: InstanceExited, Instance: k, PID: 100, Signal: "killed"})
		pid++
		f.e.Post(Event{Kind: InstanceSpawned, Instance: k, PID: pid})
		f.e.Post(Event{Kind: InstanceInitialized, Instance: k, PID: pid})
	}
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil))
	f.e.Post(execTimeout())
	f.act.expect(t, "unroutable m_0")
	f.act.expect(t, "restart m_0")
	f.act.expect(t, "routable m_0")
	s := waitFor(t, f.e, "ready again", instanceIs("m_0", StateReady))
	in := s.Models[0].Instances[0]
	if in.Restarts != 1 || in.PID != 201 {
		t.Fatalf("instance = %+v", in)
	}
}

// TestEngineTimers: duration thresholds fire from the loop's timer.
func TestEngineTimers(t *testing.T) {
	f := newEngine(t, func(c *EngineConfig) { c.WatchdogInterval = -1 })
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(func(p *Policy) { p.StopTrafficThreshold, p.RestartThreshold = 10*s, 30*s }))
	f.e.Post(hook(false))
	waitFor(t, f.e, "unhealthy", instanceIs("m_0", StateUnhealthy))
	f.clock.Advance(10 * s)
	f.act.expect(t, "unroutable m_0")
	waitFor(t, f.e, "out of traffic", instanceIs("m_0", StateOutOfTraffic))
	f.clock.Advance(20 * s)
	f.act.expect(t, "restart m_0")
	s := waitFor(t, f.e, "restarting", instanceIs("m_0", StateRestarting))
	if got := s.Models[0].Instances[0].Transitions; len(got) == 0 || !strings.Contains(got[len(got)-1].Reason, "hook failing for 30s") {
		t.Fatalf("transitions = %+v", got)
	}
}

// TestEngineWatchdogStall: an Actuator call that blocks stalls the loop;
// the watchdog notices after WatchdogMissedIntervals intervals and liveness
// fails; when the loop moves again liveness recovers.
func TestEngineWatchdogStall(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	f := newEngine(t, func(c *EngineConfig) { c.WatchdogInterval = s })
	f.act.onRestart = func(InstanceKey, string) {
		close(entered)
		<-release
	}
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil))
	f.e.Post(exited(1))
	<-entered // the loop is now stuck inside Restart

	ch, cancel := f.e.Subscribe()
	defer cancel()
	for i := range WatchdogMissedIntervals {
		if f.e.Snapshot().WatchdogStalled {
			t.Fatalf("stalled after %d intervals, want %d", i, WatchdogMissedIntervals)
		}
		f.clock.Advance(s)
	}
	f.clock.Advance(s)
	s := f.e.Snapshot()
	if !s.WatchdogStalled {
		t.Fatal("watchdog did not report the stuck loop")
	}
	if live, why := s.Live(); live || !strings.Contains(why, "stalled") {
		t.Fatalf("Live() = %v %q", live, why)
	}
	select {
	case <-ch:
	default:
		t.Fatal("subscribers not notified of the stall")
	}
	close(release)
	waitFor(t, f.e, "loop running again", func(s *Snapshot) bool { return !s.WatchdogStalled })
	if live, _ := f.e.Snapshot().Live(); !live {
		t.Fatal("liveness did not recover")
	}
}

// TestEngineWatchdogIgnoresClockJumps: one big jump of the clock (a
// suspended machine) is not a stall.
func TestEngineWatchdogIgnoresClockJumps(t *testing.T) {
	f := newEngine(t, func(c *EngineConfig) { c.WatchdogInterval = s })
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil))
	f.clock.Advance(time.Hour)
	if f.e.Snapshot().WatchdogStalled {
		t.Fatal("a clock jump looked like a stall")
	}
}

func TestWatchdogStepFunction(t *testing.T) {
	w := newWatchdog(s)
	now := t0
	tick := func() bool { now = now.Add(s); w.tick(now); return w.isStalled() }
	for range 10 { // an answering loop never stalls
		if tick() {
			t.Fatal("stalled while acking")
		}
		w.ack()
	}
	got := []bool{tick(), tick(), tick(), tick(), tick()}
	want := []bool{false, false, false, true, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stalled sequence = %v, want %v", got, want)
		}
	}
	if !w.ack() || w.isStalled() {
		t.Fatal("ack must clear the stall")
	}
}

// TestEngineQueueBound: beyond QueueLimit check results are dropped and
// counted; lifecycle and exit events never are.
func TestEngineQueueBound(t *testing.T) {
	f := newEngine(t, func(c *EngineConfig) { c.QueueLimit = 3 })
	f.e.Post(loading(testPolicy(nil)))
	f.e.Post(spawned(100))
	f.e.Post(initialized())
	for range 5 {
		f.e.Post(hook(true)) // all dropped: the queue already holds 3
	}
	f.e.Post(exited(1))
	f.e.Post(execTimeout())
	f.e.Start(context.Background())
	waitFor(t, f.e, "exit processed", instanceIs("m_0", StateRestarting))
	if got := counterValue(t, f.reg, "vigil_health_events_dropped_total", nil); got != 5 {
		t.Fatalf("dropped = %v, want 5", got)
	}
	if c := f.e.Snapshot().Models[0].Instances[0].Checks[ixHook]; !c.LastAt.IsZero() {
		t.Fatalf("hook result should have been dropped: %+v", c)
	}
}

func TestEngineCloseWaitsAndIsIdempotent(t *testing.T) {
	f := newEngine(t, nil)
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil))
	f.e.Close()
	f.e.Close()
	f.e.Post(exited(1)) // ignored after Close
	f.e.Start(context.Background())
	if st := f.e.Snapshot().Models[0].Instances[0].State; st != StateReady {
		t.Fatalf("state after Close = %s", st)
	}
	goleak.VerifyNone(t)
}

func TestEngineCloseBeforeStart(t *testing.T) {
	f := newEngine(t, nil)
	f.e.Close()
	f.e.Start(context.Background())
	goleak.VerifyNone(t)
}

func TestEngineStopsWithContext(t *testing.T) {
	f := newEngine(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	f.e.Start(ctx)
	f.bringUp(t, testPolicy(nil))
	cancel()
	f.e.Close()
	goleak.VerifyNone(t)
}

func TestEngineMetrics(t *testing.T) {
	f := newEngine(t, nil)
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil), "m_0", "m_1")
	f.e.Post(hook(true))
	f.e.Post(hook(false).on("m_1"))
	f.e.Post(signaled("killed", 100))
	f.act.expect(t, "unroutable m_1")
	f.act.expect(t, "unroutable m_0")
	f.act.expect(t, "restart m_0")
	waitFor(t, f.e, "restarting", instanceIs("m_0", StateRestarting))

	mv := map[string]string{"model": "m", "version": "1"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vigil_server_live", nil, 1},
		{"vigil_server_ready", nil, 0},
		{"vigil_model_ready", mv, 0},
		{"vigil_model_degraded", mv, 0},
		{"vigil_instance_state", map[string]string{"instance": "m_0", "state": "RESTARTING"}, 1},
		{"vigil_instance_state", map[string]string{"instance": "m_0", "state": "READY"}, 0},
		{"vigil_instance_state", map[string]string{"instance": "m_1", "state": "OUT_OF_TRAFFIC"}, 1},
		{"vigil_instance_restarts_total", map[string]string{"instance": "m_0"}, 1},
		{"vigil_health_check_results_total", map[string]string{"instance": "m_0", "check": "hook", "result": "pass"}, 1},
		{"vigil_health_check_results_total", map[string]string{"instance": "m_1", "check": "hook", "result": "fail"}, 1},
		{"vigil_health_transitions_total", map[string]string{"instance": "m_0", "from": "READY", "to": "EXITED"}, 1},
		{"vigil_health_transitions_total", map[string]string{"instance": "m_0", "from": "EXITED", "to": "RESTARTING"}, 1},
	}
	for _, c := range checks {
		if got := counterValue(t, f.reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestEngineLogsOneLinePerTransition: transitions are logged once with the
// stable keys; check results are not logged.
func TestEngineLogsOneLinePerTransition(t *testing.T) {
	f := newEngine(t, func(c *EngineConfig) { c.WatchdogInterval = -1 })
	f.e.Start(context.Background())
	f.bringUp(t, testPolicy(nil))
	before := len(f.logs.lines())
	for range 10 {
		f.e.Post(hook(true))
	}
	f.e.Post(heartbeat(true))
	waitFor(t, f.e, "heartbeat seen", func(s *Snapshot) bool { return !s.Models[0].Instances[0].Checks[ixHeartbeat].LastAt.IsZero() })
	if after := len(f.logs.lines()); after != before {
		t.Fatalf("check results logged: %v", f.logs.lines()[before:])
	}
	f.e.Post(exited(3))
	waitFor(t, f.e, "restarting", instanceIs("m_0", StateRestarting))
	var got []map[string]any
	for _, l := range f.logs.lines()[before:] {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["msg"] == "instance state changed" {
			got = append(got, m)
		}
	}
	if len(got) != 2 {
		t.Fatalf("transition lines = %v, want 2", got)
	}
	first := got[0]
	for k, want := range map[string]any{
		"model": "m", "version": "1", "instance": "m_0", "from": "READY", "to": "EXITED",
		"reason": "process exited: exit code 3", "restarts": float64(0), "level": "WARN",
	} {
		if first[k] != want {
			t.Errorf("log %s = %v, want %v", k, first[k], want)
		}
	}
	if got[1]["to"] != "RESTARTING" || got[1]["restarts"] != float64(1) {
		t.Errorf("second line = %v", got[1])
	}
}

// counterValue finds one sample by name and a subset of its labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.FieldsFunc(b.buf.String(), func(r rune) bool { return r == '\n' })
}

func TestEngineSyncWaitsForPublishedEvents(t *testing.T) {
	e := NewEngine(EngineConfig{WatchdogInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.Start(ctx)
	defer e.Close()
	p := DefaultPolicy()
	e.Post(Event{Kind: ModelLoading, Instance: InstanceKey{Model: "m", Version: "1"}, Instances: []string{"m_0"}, Policy: &p, Expected: true})
	if err := e.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Snapshot().Model("m", "1"); !ok {
		t.Fatal("Sync returned before the snapshot had the model")
	}
}

// TestEngineSetActuator: an engine built without an Actuator acts through
// the one set before Start; one set after Start is ignored.
func TestEngineSetActuator(t *testing.T) {
	f := newEngine(t, func(c *EngineConfig) { c.Actuator = nil })
	f.e.SetActuator(f.act)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.e.Start(ctx)
	late := newRecorder()
	f.e.SetActuator(late)
	p := DefaultPolicy()
	f.e.Post(Event{Kind: ModelLoading, Instance: InstanceKey{Model: "m", Version: "1"}, Instances: []string{"m_0"}, Policy: &p, Expected: true})
	f.e.Post(Event{Kind: InstanceSpawned, Instance: InstanceKey{Model: "m", Version: "1", Instance: "m_0"}, PID: 1})
	f.e.Post(Event{Kind: InstanceInitialized, Instance: InstanceKey{Model: "m", Version: "1", Instance: "m_0"}, PID: 1})
	if err := f.e.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-f.act.ch:
		if c != "routable m_0" {
			t.Errorf("first call %q, want routable m_0", c)
		}
	default:
		t.Fatal("the Actuator set before Start was not called")
	}
	if len(late.ch) != 0 {
		t.Error("an Actuator set after Start was called")
	}
}

// A model transition's log level follows whether the server was draining
// when it happened, even when the drain and the transition are recorded in
// one turn of the loop (a loaded server): a model that goes down before the
// drain is a WARN, one whose instance stops after it is INFO.
func TestEngineModelTransitionLevelFollowsTheDrainInOneBatch(t *testing.T) {
	f := newEngine(t, func(c *EngineConfig) { c.WatchdogInterval = -1 })
	// Posted before Start: the loop's first turn takes them all at once.
	f.e.Post(loading(testPolicy(nil)))
	f.e.Post(spawned(100))
	f.e.Post(initialized())
	f.e.Post(modelEv(ModelLoaded))
	f.e.Post(Event{Kind: StartupComplete})
	f.e.Post(signaled("SIGKILL", 100)) // down before the drain: WARN
	f.e.Post(spawned(101))             // the restart
	f.e.Post(initialized())
	f.e.Post(Event{Kind: Draining})
	f.e.Post(stopped()) // down after the drain: INFO
	f.e.Start(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := f.e.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range f.logs.lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["msg"] == "model state changed" {
			got = append(got, fmt.Sprintf("%v->%v %v", m["from"], m["to"], m["level"]))
		}
	}
	want := []string{"LOADING->READY INFO", "READY->UNAVAILABLE WARN", "UNAVAILABLE->READY INFO", "READY->UNAVAILABLE INFO"}
	if !slices.Equal(got, want) {
		t.Errorf("model transitions %q, want %q", got, want)
	}
}
