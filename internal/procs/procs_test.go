package procs

import (
	"context"
	"testing"
	"time"
)

// fakeRuntime records what the governor set.
type fakeRuntime struct {
	procs int
	def   int  // what SetDefault restores
	owned bool // the count is the runtime's default, which follows def
}

func (r *fakeRuntime) Procs() int { return r.procs }
func (r *fakeRuntime) SetProcs(n int) {
	r.procs = n
	r.owned = false
}
func (r *fakeRuntime) SetDefault() int {
	r.procs, r.owned = r.def, true
	return r.def
}

// quota changes the CPU quota: the default becomes def, and the count
// with it while the runtime owns it.
func (r *fakeRuntime) quota(def int) {
	r.def = def
	if r.owned {
		r.procs = def
	}
}

// machine is a governor over a fake runtime and a fake clock, driven one
// window at a time with the cores the process used in it.
type machine struct {
	rt  *fakeRuntime
	g   *Governor
	at  time.Time
	cpu time.Duration
}

func newMachine(def int) *machine {
	m := &machine{rt: &fakeRuntime{procs: def, def: def, owned: true}, at: time.Unix(1000, 0)}
	m.g = New(m.rt, func() time.Duration { return m.cpu }, func() time.Time { return m.at }, nil)
	return m
}

// window advances one Window in which the process used cores and steps.
func (m *machine) window(cores float64) int {
	m.at = m.at.Add(Window)
	m.cpu += time.Duration(cores * float64(Window))
	return m.g.Step()
}

// idle runs Hold windows of light use, after which the governor must have
// lowered the count to one P.
func (m *machine) idle(t *testing.T) {
	t.Helper()
	for range Hold {
		m.window(0.1)
	}
	if m.rt.procs != 1 {
		t.Fatalf("after %d idle windows: %d Ps, want 1", Hold, m.rt.procs)
	}
}

func TestWant(t *testing.T) {
	for _, c := range []struct {
		cores float64
		limit int
		want  int
	}{
		{0, 8, 1},
		{0.5, 8, 1},
		{0.75, 8, 1}, // exactly Busy of one P
		{0.76, 8, 2},
		{1.5, 8, 2},
		{1.6, 8, 3},
		{7, 8, 8},
		{20, 8, 8},
		{-1, 8, 1}, // a clock that went back
		{3, 1, 1},
	} {
		if got := Want(c.cores, c.limit); got != c.want {
			t.Errorf("Want(%v, %d) = %d, want %d", c.cores, c.limit, got, c.want)
		}
	}
}

func TestLowersOnlyAfterHoldWindows(t *testing.T) {
	m := newMachine(2)
	for i := 1; i < Hold; i++ {
		if n := m.window(0.3); n != 2 {
			t.Fatalf("window %d of light use: %d Ps, want 2 until %d windows", i, n, Hold)
		}
	}
	if n := m.window(0.3); n != 1 {
		t.Fatalf("after %d light windows: %d Ps, want 1", Hold, n)
	}
	if m.rt.procs != 1 {
		t.Fatalf("runtime has %d Ps, want 1", m.rt.procs)
	}
}

func TestBusyWindowRestartsTheHold(t *testing.T) {
	m := newMachine(2)
	for range Hold - 1 {
		m.window(0.2)
	}
	m.window(1.2) // wants 2: the count it has
	for i := 1; i < Hold; i++ {
		if n := m.window(0.2); n != 2 {
			t.Fatalf("window %d after the busy one: %d Ps, want 2", i, n)
		}
	}
	if n := m.window(0.2); n != 1 {
		t.Fatalf("after a full hold: %d Ps, want 1", n)
	}
}

func TestRaisesAtOnceThroughTheDefault(t *testing.T) {
	m := newMachine(4)
	m.idle(t)
	if n := m.window(0.9); n != 2 || m.rt.procs != 2 {
		t.Fatalf("0.9 cores on 1 P: %d Ps (runtime %d), want 2", n, m.rt.procs)
	}
	if m.rt.owned {
		t.Fatal("below the top the runtime owns the count")
	}
	if n := m.window(2.9); n != 4 || m.rt.procs != 4 {
		t.Fatalf("2.9 cores on 2 Ps: %d Ps (runtime %d), want 4", n, m.rt.procs)
	}
	if !m.rt.owned {
		t.Fatal("at the top the count was set, not handed back to the runtime's default")
	}
}

func TestLowersToTheMostAnyHeldWindowWanted(t *testing.T) {
	m := newMachine(8)
	for i := range Hold {
		cores := 0.5
		if i == 3 {
			cores = 2.0 // wants 3
		}
		m.window(cores)
	}
	if m.rt.procs != 3 {
		t.Fatalf("%d Ps, want 3, the most a held window wanted", m.rt.procs)
	}
}

func TestFollowsTheQuota(t *testing.T) {
	m := newMachine(2)
	m.rt.quota(6) // at the default: the runtime follows a larger quota
	m.window(5)
	m.idle(t)
	if n := m.window(5); n != 6 {
		t.Fatalf("5 cores: %d Ps, want the new default 6", n)
	}
	m.rt.quota(3) // the runtime lowers the count itself
	if n := m.window(5); n != 3 || m.rt.procs != 3 || !m.rt.owned {
		t.Fatalf("5 cores under a quota of 3: %d Ps (runtime %d, owned %v), want the runtime's 3", n, m.rt.procs, m.rt.owned)
	}
	m.idle(t)
	m.rt.quota(2) // while the governor holds the count at 1
	if n := m.window(5); n != 2 || m.rt.procs != 2 || !m.rt.owned {
		t.Fatalf("5 cores after the quota fell to 2 while held: %d Ps (runtime %d, owned %v), want the new default 2", n, m.rt.procs, m.rt.owned)
	}
}

func TestSteadyLoadChangesNothing(t *testing.T) {
	m := newMachine(2)
	m.idle(t)
	for i := range 5 * Hold {
		if n := m.window(0.6); n != 1 {
			t.Fatalf("window %d at 0.6 cores: %d Ps, want 1", i, n)
		}
	}
	for i := range 5 * Hold {
		if n := m.window(1.4); n != 2 {
			t.Fatalf("window %d at 1.4 cores: %d Ps, want 2", i, n)
		}
	}
	if !m.rt.owned {
		t.Fatal("at the top the runtime does not own the count")
	}
}

func TestRunRestoresTheDefault(t *testing.T) {
	rt := &fakeRuntime{procs: 1, def: 2}
	g := New(rt, func() time.Duration { return 0 }, time.Now, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	cancel()
	<-done
	if rt.procs != 2 {
		t.Fatalf("after Run: %d Ps, want the default 2", rt.procs)
	}
}

func TestProcessCPUAdvances(t *testing.T) {
	before := ProcessCPU()
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for ProcessCPU() <= before {
		if time.Now().After(deadline) {
			t.Fatal("the process's CPU time did not advance in 5 s of spinning")
		}
		for i := range 100000 {
			x += i
		}
	}
	_ = x
}
