package health

import (
	"strings"
	"testing"
	"time"
)

const s = time.Second

// started returns the steps that bring instance m_0 to READY at t=0.
func started(p Policy) []step {
	return []step{
		at(0, loading(p), StateStarting),
		at(0, spawned(100), StateStarting),
		at(0, initialized(), StateReady, "routable"),
		at(0, modelEv(ModelLoaded), StateReady),
	}
}

func TestTrackerScenarios(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, h *harness)
	}{
		{
			name: "startup",
			steps: []step{
				at(0, loading(testPolicy(nil)), StateStarting, []string{}...),
				at(1*s, spawned(100), StateStarting),
				at(5*s, heartbeat(false), StateStarting), // not judged before initialize
				at(9*s, initialized(), StateReady, "routable"),
				at(9*s, modelEv(ModelLoaded), StateReady),
			},
			check: func(t *testing.T, h *harness) {
				m, _ := h.snapshot().Model(testModel, testVersion)
				if !m.Ready || m.State != ModelStateReady || m.Degraded {
					t.Fatalf("model = %+v, want ready", m)
				}
			},
		},
		{
			// Kubernetes counting: consecutive identical results; a change
			// starts the run over. Failure 3, success 2.
			name: "flapping hook with thresholds",
			steps: append(started(testPolicy(func(p *Policy) {
				p.FailureThreshold, p.SuccessThreshold, p.RestartThreshold = 3, 2, 5*time.Minute
			})),
				at(10*s, hook(true), StateReady), // first result applies at once
				at(20*s, hook(false), StateReady),
				at(30*s, hook(true), StateReady),
				at(40*s, hook(false), StateReady),
				at(50*s, hook(false), StateReady),
				at(60*s, hook(true), StateReady),
				at(70*s, hook(false), StateReady),
				at(80*s, hook(false), StateReady),
				at(90*s, hook(false), StateOutOfTraffic, "unroutable"), // 3rd in a row; stop_traffic 0
				at(100*s, hook(true), StateOutOfTraffic),
				at(110*s, hook(false), StateOutOfTraffic),
				at(120*s, hook(true), StateOutOfTraffic),
				at(125*s, hook(true), StateReady, "routable"), // 2nd success in a row
			),
		},
		{
			// A slow hook: timeouts are failures. Unhealthy (still routable)
			// first, out of traffic after stop_traffic_threshold.
			name: "slow hook",
			steps: append(started(testPolicy(func(p *Policy) {
				p.FailureThreshold, p.StopTrafficThreshold, p.RestartThreshold = 2, 20*s, 60*s
			})),
				at(10*s, hook(true), StateReady),
				at(20*s, hookTimeout(), StateReady),
				at(30*s, hookTimeout(), StateUnhealthy), // threshold 2 reached; still routable
				at(40*s, hookTimeout(), StateUnhealthy),
				tickAt(49*s, StateUnhealthy),
				tickAt(50*s, StateOutOfTraffic, "unroutable"), // failing for 20s
				at(60*s, hook(true), StateReady, "routable"),
			),
			check: func(t *testing.T, h *harness) {
				c := h.snapshot().Models[0].Instances[0].Checks[ixHook]
				if !c.Passing || !c.LastOK || c.Consecutive != 1 {
					t.Fatalf("hook check = %+v", c)
				}
			},
		},
		{
			// A hook that hangs: repeated timeouts → out of traffic, then a
			// restart after restart_threshold; the killed old process is not
			// a crash; the new one recovers.
			name: "hanging hook restarts, then recovers",
			steps: append(started(testPolicy(func(p *Policy) {
				p.StopTrafficThreshold, p.RestartThreshold = 10*s, 30*s
			})),
				at(10*s, hookTimeout(), StateUnhealthy), // first result applies at once
				tickAt(20*s, StateOutOfTraffic, "unroutable"),
				at(30*s, hookTimeout(), StateOutOfTraffic),
				tickAt(39*s, StateOutOfTraffic),
				tickAt(40*s, StateRestarting, "restart"),
				at(41*s, signaled("killed", 100), StateRestarting), // the old process, killed by the restart
				at(42*s, spawned(101), StateStarting),
				at(43*s, signaled("killed", 100), StateStarting), // late report of the old pid: stale
				at(44*s, initialized(), StateReady, "routable"),
				at(54*s, hook(true), StateReady),
			),
			check: func(t *testing.T, h *harness) {
				in := h.snapshot().Models[0].Instances[0]
				if in.Restarts != 1 || in.PID != 101 || in.LastExit != "signal killed" {
					t.Fatalf("instance = %+v", in)
				}
			},
		},
		{
			name: "restart_check_delay grace",
			steps: append(started(testPolicy(func(p *Policy) { p.RestartCheckDelay = 30 * s })),
				at(10*s, hook(false), StateReady),
				at(20*s, hook(false), StateReady),
				at(29*s, heartbeat(false), StateReady),
				at(30*s, hook(false), StateOutOfTraffic, "unroutable"), // grace over: first counted result applies
			),
		},
		{
			name: "grace restarts with each new process",
			steps: append(started(testPolicy(func(p *Policy) { p.RestartCheckDelay = 30 * s })),
				at(100*s, exited(1), StateRestarting, "unroutable", "restart"),
				at(101*s, spawned(101), StateStarting),
				at(110*s, initialized(), StateReady, "routable"),
				at(130*s, hook(false), StateReady), // 20s after the restart: inside the grace
				at(140*s, hook(false), StateOutOfTraffic, "unroutable"),
			),
		},
		{
			name: "crash loop ends FAILED",
			steps: append(started(testPolicy(func(p *Policy) {
				p.MaxRestarts, p.BackoffInitial = 3, s
			})),
				at(0, exited(1), StateRestarting, "unroutable", "restart"), // 1st restart: immediate
				at(0, spawned(101), StateStarting),
				at(1*s, exited(1), StateExited, []string{}...), // 2nd waits 1s
				tickAt(2*s, StateRestarting, "restart"),
				at(2*s, spawned(102), StateStarting),
				at(3*s, exited(1), StateExited),
				tickAt(4*s, StateExited),
				tickAt(5*s, StateRestarting, "restart"), // 3rd waits 2s
				at(5*s, spawned(103), StateStarting),
				at(6*s, exited(1), StateFailed, "fail"), // 4th would exceed 3 in 10m
				at(7*s, spawned(104), StateFailed),      // a stray spawn is no retry
				tickAt(6*s+5*time.Minute-time.Millisecond, StateFailed, []string{}...),
			),
			check: func(t *testing.T, h *harness) {
				snap := h.snapshot()
				in := snap.Models[0].Instances[0]
				if in.Restarts != 3 || !strings.Contains(in.Reason, "restarts exhausted") || !strings.Contains(in.Reason, "exit code 1") {
					t.Fatalf("instance = %+v", in)
				}
				if live, why := snap.Live(); live || !strings.Contains(why, "exit code 1") || strings.Count(why, "restarts exhausted") != 1 {
					t.Fatalf("Live() = %v, %q; want false with the last cause", live, why)
				}
				m := snap.Models[0]
				if m.Ready || m.State != ModelStateUnavailable || !strings.Contains(m.Reason, "all instances failed") {
					t.Fatalf("model = %+v, want UNAVAILABLE", m)
				}
				snap.Escalate = false
				if live, _ := snap.Live(); !live {
					t.Fatal("without escalation a FAILED instance must not fail liveness")
				}
				// A reload starts over.
				h.post(loading(testPolicy(nil)))
				if st := h.instance("m_0").state; st != StateStarting {
					t.Fatalf("after reload state = %s", st)
				}
				if live, _ := h.snapshot().Live(); !live {
					t.Fatal("reload must clear the escalation")
				}
			},
		},
		{
			name: "initialize raising every time ends FAILED",
			steps: []step{
				at(0, loading(testPolicy(func(p *Policy) { p.MaxRestarts = 2 })), StateStarting),
				at(0, spawned(100), StateStarting),
				at(1*s, initFailed("ValueError: bad weights"), StateRestarting, "restart"),
				at(1*s, spawned(101), StateStarting),
				at(2*s, initFailed("ValueError: bad weights"), StateExited),
				tickAt(3*s, StateRestarting, "restart"),
				at(3*s, spawned(102), StateStarting),
				at(4*s, initFailed("ValueError: bad weights"), StateFailed, "fail"),
			},
			check: func(t *testing.T, h *harness) {
				in := h.snapshot().Models[0].Instances[0]
				if !strings.Contains(in.Reason, "initialize failed: ValueError: bad weights") {
					t.Fatalf("reason = %q", in.Reason)
				}
			},
		},
		{
			name: "errors check: pattern fails at once, success passes again",
			steps: append(started(testPolicy(func(p *Policy) {
				p.ErrorPatterns = []string{"CUDA error", "out of memory"}
				p.StopTrafficThreshold, p.RestartThreshold = 10*s, 30*s
			})),
				at(1*s, exec(false, "ValueError: bad input"), StateReady), // no pattern, consecutive off
				at(2*s, exec(false, "RuntimeError: CUDA error: device-side assert triggered"), StateUnhealthy),
				at(3*s, exec(true, ""), StateReady),
				at(4*s, exec(false, "torch: CUDA Out Of Memory"), StateUnhealthy),
				tickAt(14*s, StateOutOfTraffic, "unroutable"),
				tickAt(34*s, StateRestarting, "restart"),
			),
		},
		{
			name: "errors check: consecutive errors",
			steps: append(started(testPolicy(func(p *Policy) { p.ConsecutiveErrors = 3 })),
				at(1*s, exec(false, "boom"), StateReady),
				at(2*s, exec(false, "boom"), StateReady),
				at(3*s, exec(true, ""), StateReady), // resets the run
				at(4*s, exec(false, "boom"), StateReady),
				at(5*s, exec(false, "boom"), StateReady),
				at(6*s, exec(false, "boom"), StateOutOfTraffic, "unroutable"),
				tickAt(36*s, StateRestarting, "restart"), // restart_threshold 30s
			),
			check: func(t *testing.T, h *harness) {
				tr := h.instance("m_0").ring
				last := tr[len(tr)-1]
				if !strings.Contains(last.Reason, "check errors failing for 30s") {
					t.Fatalf("restart reason = %q", last.Reason)
				}
			},
		},
		{
			name: "progress timeout restarts at once",
			steps: append(started(testPolicy(nil)),
				at(5*s, execTimeout(), StateRestarting, "unroutable", "restart"),
			),
			check: func(t *testing.T, h *harness) {
				c := h.snapshot().Models[0].Instances[0].Checks[ixProgress]
				if c.Passing || !strings.Contains(c.LastMessage, "execute ran past its limit") {
					t.Fatalf("progress check = %+v", c)
				}
			},
		},
		{
			name: "heartbeat failure is judged like the hook",
			steps: append(started(testPolicy(func(p *Policy) { p.StopTrafficThreshold = 5 * s })),
				at(1*s, heartbeat(false), StateUnhealthy),
				at(2*s, heartbeat(true), StateReady),
			),
		},
		{
			// A check that stops reporting fails after 2 periods plus its
			// timeout (heartbeat: 2×1s+5s); one that never reported cannot.
			name: "silent heartbeat fails",
			steps: append(started(testPolicy(func(p *Policy) { p.RestartThreshold, p.HeartbeatTimeout = time.Hour, 5*s })),
				tickAt(time.Minute, StateReady, []string{}...), // no heartbeat yet: not silent
				at(time.Minute, heartbeat(true), StateReady),
				tickAt(time.Minute+6*s, StateReady),
				tickAt(time.Minute+7*s, StateOutOfTraffic, "unroutable"),
				at(time.Minute+8*s, heartbeat(true), StateReady, "routable"),
			),
			check: func(t *testing.T, h *harness) {
				tr := h.instance("m_0").ring
				if r := tr[len(tr)-2].Reason; r != "check heartbeat failing: no result for 7s" {
					t.Fatalf("reason = %q", r)
				}
			},
		},
		{
			name: "silence inside the restart check delay does not count",
			steps: append(started(testPolicy(func(p *Policy) { p.RestartCheckDelay = 30 * s })),
				at(1*s, heartbeat(true), StateReady),
				tickAt(29*s, StateReady, []string{}...),
				tickAt(30*s, StateOutOfTraffic, "unroutable"),
			),
		},
		{
			name: "unload stops without restart",
			steps: append(started(testPolicy(nil)),
				at(1*s, modelEv(ModelUnloading), StateStopping, "unroutable"),
				at(2*s, exited(0), StateStopped, []string{}...),
				at(3*s, modelEv(ModelUnloaded), StateStopped, []string{}...),
			),
			check: func(t *testing.T, h *harness) {
				m := h.snapshot().Models[0]
				if m.State != ModelStateUnavailable || m.Reason != "unloaded" || m.Expected {
					t.Fatalf("model = %+v", m)
				}
			},
		},
		{
			// A restart racing an unload: the late spawn is ignored and the
			// new process's exit is not a crash.
			name: "restart racing an unload",
			steps: append(started(testPolicy(nil)),
				at(1*s, exited(1), StateRestarting, "unroutable", "restart"),
				at(2*s, modelEv(ModelUnloading), StateStopping, []string{}...),
				at(3*s, spawned(101), StateStopping, []string{}...),
				at(4*s, initialized(), StateStopping, []string{}...),
				at(5*s, exited(0), StateStopped, []string{}...),
			),
		},
		{
			name: "a failed load is not escalated",
			steps: []step{
				at(0, loading(testPolicy(func(p *Policy) { p.MaxRestarts = 0 })), StateStarting),
				at(0, spawned(100), StateStarting),
				at(1*s, initFailed("ImportError: no module named torch"), StateFailed, "fail"),
				at(1*s, Event{Kind: ModelLoadFailed, Instance: ikey(""), Reason: "initialize failed: ImportError: no module named torch"}, StateStopped, []string{}...),
			},
			check: func(t *testing.T, h *harness) {
				if live, why := h.snapshot().Live(); !live {
					t.Fatalf("Live() = false: %s", why)
				}
				if m := h.snapshot().Models[0]; m.State != ModelStateUnavailable || !strings.Contains(m.Reason, "ImportError") {
					t.Fatalf("model = %+v", m)
				}
			},
		},
		{
			name: "stopped on purpose is not a crash",
			steps: append(started(testPolicy(nil)),
				at(1*s, stopped(), StateStopped, "unroutable"),
				at(2*s, exited(0), StateStopped, []string{}...),
			),
		},
		{
			name: "no restarts while draining",
			steps: append(started(testPolicy(nil)),
				at(1*s, Event{Kind: Draining}, StateReady),
				at(2*s, exited(1), StateExited, "unroutable"),
				tickAt(time.Hour, StateExited, []string{}...),
			),
		},
		{
			name: "load failure",
			steps: []step{
				at(0, loading(testPolicy(nil)), StateStarting),
				at(0, spawned(100), StateStarting),
				at(1*s, Event{Kind: ModelLoadFailed, Instance: ikey(""), Reason: "config.pbtxt: unknown field"}, StateStopped),
			},
			check: func(t *testing.T, h *harness) {
				ready, why, found := h.snapshot().ModelReady(testModel, "")
				if ready || !found || !strings.Contains(why, "UNAVAILABLE: config.pbtxt: unknown field") {
					t.Fatalf("ModelReady = %v %q %v", ready, why, found)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.run(tt.steps)
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}
