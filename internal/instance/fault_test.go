package instance

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// newSlow is an instance of testdata/slow: initialize sleeps initSleep
// seconds, execute sleeps for its input's value in seconds.
func newSlow(t *testing.T, ev *sink, q *scheduler.Queue, policy health.Policy, initSleep string) *Instance {
	t.Helper()
	return newTestInstance(t, ev, q, policy, "slow", `{"name":"slow","parameters":{"init_sleep":{"string_value":"`+initSleep+`"}}}`)
}

// submitHeld submits a request whose execute sleeps 30 s and returns once
// the stub holds it; its result comes on the channel.
func submitHeld(t *testing.T, q *scheduler.Queue, in *Instance) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := q.Submit(ctx(t), echoRequest(30), 1)
		errc <- err
	}()
	waitHeld(t, in)
	return errc
}

func fastHeartbeat() health.Policy {
	p := health.DefaultPolicy()
	p.HeartbeatPeriod, p.HeartbeatTimeout = 50*time.Millisecond, 300*time.Millisecond
	return p
}

// The reaper sees a stop and a continue as events, and a stopped instance
// takes no work from the moment it is stopped.
func TestStopAndContinueAreEvents(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	in := newEcho(t, ev, q, health.DefaultPolicy())
	init, i := serving(t, in, ev, q)
	if err := syscall.Kill(init.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	sus, j := ev.waitFor(t, i, "suspended", kind(health.InstanceSuspended))
	if sus.Signal != "SIGSTOP" || sus.PID != init.PID {
		t.Errorf("suspended event %+v", sus)
	}
	t.Logf("stop seen after %s", time.Since(stopped))
	in.mu.Lock()
	session := in.session
	in.mu.Unlock()
	if session != nil {
		t.Error("a stopped instance still has a session to take work in")
	}
	if err := syscall.Kill(init.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, j, "resumed", kind(health.InstanceResumed))
	// The continued stub is pinged at once, well before the next period.
	ev.waitFor(t, j, "a ping after the continue", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && e.OK
	})
}

// A batch held by a stub whose heartbeat fails is answered 503 within the
// heartbeat bound, and its instance asks to be restarted at once.
func TestWedgedBatchIsAnsweredWithinTheHeartbeatBound(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	p := fastHeartbeat()
	in, init := servingSlow(t, ev, q, p)
	errc := submitHeld(t, q, in) // execute sleeps 30 s
	if err := syscall.Kill(init.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(init.PID, syscall.SIGKILL)
	wedged := time.Now()
	var err error
	select {
	case err = <-errc:
	case <-time.After(testTimeout):
		t.Fatal("the wedged batch was never answered")
	}
	took := time.Since(wedged)
	bound := p.HeartbeatPeriod + p.HeartbeatTimeout + time.Second
	t.Logf("wedge to answer: %s (bound %s)", took, bound)
	if apierr.CodeOf(err) != apierr.Unavailable || !strings.Contains(err.Error(), "stopped responding") {
		t.Fatalf("answer = %v, want 503 saying the instance stopped responding", err)
	}
	if took > bound {
		t.Errorf("answered after %s, more than %s", took, bound)
	}
	res, _ := ev.waitFor(t, 0, "a hang result", func(e health.Event) bool {
		return e.Kind == health.ExecuteResult && e.TimedOut
	})
	if res.Cause != health.CauseHang || !strings.Contains(res.Reason, "heartbeat failed") {
		t.Errorf("execute result %+v", res)
	}
}

// The requests of a stub that died are answered only once the health
// engine was told and has published it: a client told "died" finds
// readiness saying so too.
func TestDeathIsPublishedBeforeItsRequestsAreAnswered(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	in, init := servingSlow(t, ev, q, health.DefaultPolicy())
	errc := submitHeld(t, q, in) // execute sleeps 30 s
	if err := syscall.Kill(init.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-errc:
	case <-time.After(testTimeout):
		t.Fatal("the dead stub's request was never answered")
	}
	if !strings.Contains(err.Error(), "died while executing") {
		t.Fatalf("answer = %v", err)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	exited := -1
	for i, e := range ev.events {
		if e.Kind == health.InstanceExited && e.PID == init.PID {
			exited = i
		}
	}
	synced := false
	for _, n := range ev.syncedAt {
		synced = synced || (exited >= 0 && n > exited)
	}
	if !synced {
		t.Fatalf("the request was answered before the exit (event %d) was synced (syncs after %v events)", exited, ev.syncedAt)
	}
}

// A stub stopped inside initialize is caught by its heartbeat: initialize
// fails as a hang instead of running forever.
func TestHangInsideInitializeIsDetected(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	in := newSlow(t, ev, q, fastHeartbeat(), "30")
	defer in.Stop(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- in.Start(ctx(t)) }()
	sp, i := ev.waitFor(t, 0, "spawned", kind(health.InstanceSpawned))
	ev.waitFor(t, i, "a ping answered during initialize", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && e.OK
	})
	if err := syscall.Kill(sp.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "initialize hung") {
			t.Fatalf("Start = %v, want a hang during initialize", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Start never returned for a stub stopped in initialize")
	}
	f, _ := ev.waitFor(t, 0, "init failed", kind(health.InstanceInitFailed))
	if f.Cause != health.CauseHang {
		t.Errorf("init failure %+v, want cause hang", f)
	}
}

// initialize_timeout_seconds bounds an initialize that never returns.
func TestInitializeTimeout(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	p := health.DefaultPolicy()
	p.InitializeTimeout = 300 * time.Millisecond
	in := newSlow(t, ev, q, p, "30")
	defer in.Stop(context.Background())
	err := in.Start(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "initialize_timeout_seconds") {
		t.Fatalf("Start = %v, want the initialize timeout", err)
	}
	f, _ := ev.waitFor(t, 0, "init failed", kind(health.InstanceInitFailed))
	if f.Cause != health.CauseHang {
		t.Errorf("init failure %+v, want cause hang", f)
	}
}

// A restart asked for while one is under way is carried out after it.
func TestRestartDuringRestartIsNotDropped(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	in := newEcho(t, ev, q, health.DefaultPolicy())
	_, i := started(t, in, ev)
	in.Restart("first")
	in.Restart("second")
	_, j := ev.waitFor(t, i+1, "initialized after the first restart", kind(health.InstanceInitialized))
	ev.waitFor(t, j+1, "initialized after the second restart", kind(health.InstanceInitialized))
}

// A stub stopped by a signal while it holds a batch is a hang decided by a
// ping sent at the stop: answered 503 within heartbeat_timeout_seconds of
// the stop (plus slack), whatever the heartbeat period.
func TestStoppedStubHoldingABatchIsAHangWithinTheTimeout(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	p := health.DefaultPolicy()
	p.HeartbeatPeriod, p.HeartbeatTimeout = 5*time.Second, 300*time.Millisecond
	in, init := servingSlow(t, ev, q, p)
	errc := submitHeld(t, q, in) // execute sleeps 30 s
	if err := syscall.Kill(init.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(init.PID, syscall.SIGKILL)
	stopped := time.Now()
	var err error
	select {
	case err = <-errc:
	case <-time.After(testTimeout):
		t.Fatal("the stopped stub's batch was never answered")
	}
	took, bound := time.Since(stopped), p.HeartbeatTimeout+time.Second
	t.Logf("stop to answer: %s (bound %s)", took, bound)
	if apierr.CodeOf(err) != apierr.Unavailable || !strings.Contains(err.Error(), "stopped responding") ||
		!strings.Contains(err.Error(), "stopped by a signal") {
		t.Fatalf("answer = %v, want 503 saying the stopped instance stopped responding", err)
	}
	if took > bound {
		t.Errorf("answered after %s, more than %s", took, bound)
	}
	ev.waitFor(t, 0, "a hang result", func(e health.Event) bool {
		return e.Kind == health.ExecuteResult && e.TimedOut && e.Cause == health.CauseHang
	})
}

// An idle stopped stub is not a hang: its heartbeat fails (the engine's
// thresholds apply) but nothing is aborted, and a continue brings it back.
func TestIdleStoppedStubIsNotAHang(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	in := newEcho(t, ev, q, fastHeartbeat())
	init, i := serving(t, in, ev, q)
	if err := syscall.Kill(init.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(init.PID, syscall.SIGKILL)
	fail, j := ev.waitFor(t, i, "a failing heartbeat", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && !e.OK
	})
	if !strings.Contains(fail.Reason, "stopped by a signal") {
		t.Errorf("heartbeat reason %q does not say the stub is stopped", fail.Reason)
	}
	// Two more failed pings: still no hang.
	_, j = ev.waitFor(t, j+1, "a second failing heartbeat", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && !e.OK
	})
	if err := syscall.Kill(init.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	_, k := ev.waitFor(t, j, "a passing heartbeat after the continue", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && e.OK
	})
	ev.mu.Lock()
	for _, e := range ev.events[:k] {
		if e.Kind == health.ExecuteResult && e.TimedOut {
			t.Errorf("an idle stopped stub was declared hung: %+v", e)
		}
	}
	ev.mu.Unlock()
	if _, err := q.Submit(ctx(t), echoRequest(2), 1); err != nil {
		t.Errorf("the continued stub does not serve: %v", err)
	}
}

// A heartbeat that fails on a closed control connection says so, not that
// the stub did not answer in time.
func TestHeartbeatNamesAClosedConnection(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	in := newEcho(t, ev, q, fastHeartbeat())
	init, i := started(t, in, ev)
	// Stopped, the stub cannot exit when its connection closes, so the
	// closed connection is all the heartbeat sees.
	if err := syscall.Kill(init.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(init.PID, syscall.SIGKILL)
	_, i = ev.waitFor(t, i, "suspended", kind(health.InstanceSuspended))
	in.mu.Lock()
	client := in.gen.proc.client
	in.mu.Unlock()
	client.Close()
	fail, _ := ev.waitFor(t, i, "a heartbeat failing on the closed connection", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && !e.OK && !e.TimedOut
	})
	if !strings.Contains(fail.Reason, "control connection to the stub is closed") || strings.Contains(fail.Reason, "did not answer") {
		t.Errorf("heartbeat reason %q, want the closed connection", fail.Reason)
	}
}

// servingSlow starts a slow-stub instance (no initialize delay) with policy
// p and puts it in traffic on q; it returns the instance and its
// initialized event. The instance is stopped when the test ends.
func servingSlow(t *testing.T, ev *sink, q *scheduler.Queue, p health.Policy) (*Instance, health.Event) {
	t.Helper()
	in := newSlow(t, ev, q, p, "0")
	init, _ := serving(t, in, ev, q)
	return in, init
}

// waitHeld waits until in holds a request (its batch is on the stub).
func waitHeld(t *testing.T, in *Instance) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		if n, _ := in.Held(); n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the stub")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A stub continued before its stop's ping times out is no hang: the batch
// it holds completes, and it returns by the same path as any stop.
func TestStubContinuedBeforeTheDecisionKeepsItsBatch(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("slow", scheduler.Batching{}, &scheduler.Stats{})
	p := health.DefaultPolicy()
	p.HeartbeatPeriod, p.HeartbeatTimeout = time.Second, 5*time.Second
	in, init := servingSlow(t, ev, q, p)
	errc := make(chan error, 1)
	go func() {
		_, err := q.Submit(ctx(t), echoRequest(1), 1) // execute sleeps 1 s
		errc <- err
	}()
	waitHeld(t, in)
	if err := syscall.Kill(init.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(init.PID, syscall.SIGKILL)
	_, i := ev.waitFor(t, 0, "suspended", kind(health.InstanceSuspended))
	if err := syscall.Kill(init.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, i, "resumed", kind(health.InstanceResumed))
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("the batch of a stub continued in time: %v, want its answer", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the batch of a continued stub was never answered")
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.events {
		if e.Kind == health.ExecuteResult && e.TimedOut {
			t.Errorf("a stub continued before the decision was declared hung: %+v", e)
		}
	}
}
