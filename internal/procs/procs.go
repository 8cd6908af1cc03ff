// Package procs sizes the Go runtime's parallelism, its number of Ps
// (GOMAXPROCS), to the CPU the server keeps busy.
//
// Every P beyond what the process uses costs it CPU: when a goroutine makes
// another runnable (a reply handed from a connection's reader to the
// request waiting for it, net/http's per-request connection watcher) and a
// P is idle, the runtime wakes a thread to run that P, which finds nothing
// to do and sleeps again. A server answering one request at a time pays
// that for every hand-off. On the 2-vCPU benchmark machine one P instead of
// two cut the server process's CPU per inference by a third at
// concurrency 1 and by a sixth at 8 and 16, and raised throughput with it
// (docs/configuration.md), because the load generator and the stubs, not the
// server, filled the second core. A server that needs more cores gets
// them: a Governor steps the P count up as soon as the process keeps more
// than Busy of its Ps busy, and back down once it has used less for Hold
// in a row, between 1 and the runtime's default (the CPUs the process may
// use, or its cgroup quota), which it restores at the top and when it
// stops, so that the runtime keeps following quota changes there.
package procs

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"syscall"
	"time"
)

// Tuning of the Governor.
const (
	// Window is how often the governor measures the process's CPU time.
	Window = 100 * time.Millisecond
	// Busy is the share of its Ps the process may keep busy over a window
	// before it gets more: it wants ceil(cores used / Busy) Ps.
	Busy = 0.75
	// Hold is how many windows in a row must want fewer Ps before the
	// governor lowers the count, to the most any of them wanted.
	Hold = 10
)

// Log keys.
const (
	LogKeyProcs = "procs"
	LogKeyCores = "cores_used"
)

// Runtime is what the governor changes: the Go runtime's P count.
type Runtime interface {
	// Procs returns the current P count.
	Procs() int
	// SetProcs sets the P count to n ≥ 1.
	SetProcs(n int)
	// SetDefault restores the runtime's default P count and returns it.
	SetDefault() int
}

// Governor steps the P count between 1 and the runtime's default after
// the process's CPU use. Step is the decision for one window; Run calls it
// every Window.
type Governor struct {
	rt  Runtime
	cpu func() time.Duration // the process's CPU time so far
	now func() time.Time
	log *slog.Logger

	max     int  // the runtime's default P count, as last seen
	atMax   bool // the runtime owns the count: it is at its default
	lastCPU time.Duration
	lastAt  time.Time
	low     int // windows in a row that wanted fewer Ps than the current count
	peak    int // the most Ps any of those windows wanted
}

// New returns a governor of rt whose process has used cpu() CPU time so
// far, starting from the runtime's current P count, which it takes as the
// default. A nil log discards.
func New(rt Runtime, cpu func() time.Duration, now func() time.Time, log *slog.Logger) *Governor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Governor{rt: rt, cpu: cpu, now: now, log: log, max: max(rt.Procs(), 1), atMax: true, lastCPU: cpu(), lastAt: now()}
}

// Want is the P count under which cores used over a window keep at most
// Busy of the Ps busy, within [1, limit].
func Want(cores float64, limit int) int {
	n := int(math.Ceil(cores/Busy - 1e-9))
	return min(max(n, 1), limit)
}

// Step measures the CPU the process used since the last step and sets the
// P count for the next window: up at once to what the window wanted, down
// after Hold windows in a row wanted fewer. It returns the count in force.
func (g *Governor) Step() int {
	now, cpu := g.now(), g.cpu()
	elapsed := now.Sub(g.lastAt)
	used := cpu - g.lastCPU
	g.lastAt, g.lastCPU = now, cpu
	cur := g.rt.Procs()
	if g.atMax {
		g.max = cur // the runtime follows the CPU quota, up or down
	}
	if elapsed <= 0 {
		return cur
	}
	cores := float64(used) / float64(elapsed)
	want := Want(cores, g.max)
	if want >= cur {
		g.low, g.peak = 0, 0
		if want > cur {
			return g.set(want, cur, cores)
		}
		return cur
	}
	g.low++
	g.peak = max(g.peak, want)
	if g.low < Hold {
		return cur
	}
	n := g.peak
	g.low, g.peak = 0, 0
	return g.set(n, cur, cores)
}

// set changes the P count from cur to n. A raise asks the runtime for its
// default first, since the CPU quota may have changed while the governor
// held the count, and leaves the count to the runtime when n reaches it.
func (g *Governor) set(n, cur int, cores float64) int {
	raise := n > cur
	if raise {
		g.max = g.rt.SetDefault()
		n = min(n, g.max)
	}
	g.atMax = raise && n == g.max
	if !g.atMax {
		g.rt.SetProcs(n)
	}
	g.log.Debug("parallelism changed", LogKeyProcs, n, LogKeyCores, math.Round(cores*100)/100)
	return n
}

// Run steps every Window until ctx ends, then restores the runtime's
// default.
func (g *Governor) Run(ctx context.Context) {
	t := time.NewTicker(Window)
	defer t.Stop()
	defer g.rt.SetDefault()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.Step()
		}
	}
}

// GoRuntime is the Runtime of this process.
type GoRuntime struct{}

// Procs returns GOMAXPROCS.
func (GoRuntime) Procs() int { return runtime.GOMAXPROCS(0) }

// SetProcs sets GOMAXPROCS.
func (GoRuntime) SetProcs(n int) { runtime.GOMAXPROCS(n) }

// SetDefault restores the runtime's default GOMAXPROCS, which it then
// updates when the process's CPU quota changes.
func (GoRuntime) SetDefault() int {
	runtime.SetDefaultGOMAXPROCS()
	return runtime.GOMAXPROCS(0)
}

// ProcessCPU returns the CPU time, user and system, that every thread of
// this process has used so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
