package health

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The one rule: READY and UNHEALTHY take traffic, nothing else does.
func TestRoutableIsOneRuleOverStates(t *testing.T) {
	want := map[InstanceState]bool{StateReady: true, StateUnhealthy: true}
	for _, s := range []InstanceState{StateStarting, StateReady, StateUnhealthy, StateOutOfTraffic, StateRestarting,
		StateExited, StateFailed, StateStopping, StateStopped} {
		if s.Routable() != want[s] {
			t.Errorf("%s.Routable() = %v", s, s.Routable())
		}
	}
}

// Whatever happens to a version's instances, the SetRoutable actions the
// engine sends (what the scheduler acts on), the snapshot's per-instance
// Routable and the version's Routable count, Ready and Degraded all say
// the same thing after every step: they derive from one rule.
func TestSetRoutableAndSnapshotAgreeUnderRandomEvents(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 7))
		h := newHarness(t)
		p := testPolicy(func(p *Policy) {
			p.MinReadyInstances = 2
			p.StopTrafficThreshold = 2 * time.Second
			p.RestartThreshold = 5 * time.Second
			p.MaxRestarts = 3
			p.RestartWindow = time.Minute
			p.BackoffMax = 20 * time.Second
		})
		names := []string{"m_0", "m_1", "m_2"}
		told := map[string]bool{} // the last SetRoutable per instance
		apply := func(acts []action) {
			for _, a := range acts {
				if a.kind == actSetRoutable {
					told[a.key.Instance] = a.routable
				}
			}
		}
		apply(h.post(loading(p, names...)))
		pids := map[string]int{}
		nextPID := 100
		elapsed := time.Duration(0)
		for i := range 120 {
			name := names[r.IntN(len(names))]
			var e Event
			switch r.IntN(12) {
			case 0:
				nextPID++
				pids[name] = nextPID
				e = spawned(nextPID)
			case 1:
				e = initialized()
			case 2:
				e = exited(1)
			case 3:
				e = heartbeat(false)
			case 4:
				e = heartbeat(true)
			case 5:
				e = hook(false)
			case 6:
				e = hook(true)
			case 7:
				e = execTimeout()
			case 8:
				e = ev(InstanceSuspended)
			case 9:
				e = ev(InstanceResumed)
			case 10:
				e = modelEv(ModelLoaded)
			case 11:
				e = exec(false, "boom")
			}
			if e.Instance.Instance != "" {
				e = e.on(name)
				if e.PID == 0 {
					e.PID = pids[name]
				}
			}
			elapsed += time.Duration(r.IntN(3000)) * time.Millisecond
			apply(h.advance(elapsed))
			apply(h.post(e))
			snap := h.snapshot()
			mh, ok := snap.Model(testModel, testVersion)
			if !ok {
				t.Fatalf("seed %d step %d: version missing", seed, i)
			}
			n := 0
			for _, in := range mh.Instances {
				if in.Routable() != told[in.Name] {
					t.Fatalf("seed %d step %d: %s is %s in the snapshot (routable %v) but the scheduler was told %v",
						seed, i, in.Name, in.State, in.Routable(), told[in.Name])
				}
				if in.Routable() {
					n++
				}
			}
			if mh.Routable() != n {
				t.Fatalf("seed %d step %d: version routable %d, instances say %d", seed, i, mh.Routable(), n)
			}
			wantReady := mh.State == ModelStateReady && n >= 2
			if mh.Ready != wantReady || mh.Degraded != (wantReady && n < len(mh.Instances)) {
				t.Fatalf("seed %d step %d: ready %v degraded %v with %d of %d routable (state %s)",
					seed, i, mh.Ready, mh.Degraded, n, len(mh.Instances), mh.State)
			}
		}
	}
}
