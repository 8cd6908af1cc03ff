package health

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of EngineConfig.
const (
	DefaultWatchdogInterval = time.Second
	DefaultQueueLimit       = 4096
)

// EngineConfig configures an Engine. Every field is optional.
type EngineConfig struct {
	// Actuator carries out SetRoutable, Restart and Fail; nil does nothing.
	// It is called from the engine's loop, outside any engine lock, so it
	// may call Post and Snapshot; it must return quickly: a call that blocks
	// for WatchdogMissedIntervals×WatchdogInterval stalls the loop and fails
	// liveness.
	Actuator Actuator
	// Clock is the time source; nil is the wall clock.
	Clock Clock
	// Logger receives one line per state transition; nil discards.
	Logger *slog.Logger
	// Registerer receives the engine's metrics (metrics.go); nil registers
	// nothing. NewEngine panics if they are already registered there.
	Registerer prometheus.Registerer
	// Strict is --strict-readiness; Escalate is --escalate-failed-models.
	// Both are copied into every Snapshot.
	Strict   bool
	Escalate bool
	// WatchdogInterval paces the loop's watchdog; 0 means
	// DefaultWatchdogInterval, a negative value turns the watchdog off.
	WatchdogInterval time.Duration
	// QueueLimit bounds the queue of unprocessed events for the events that
	// may be dropped (see Post); 0 means DefaultQueueLimit.
	QueueLimit int
}

// Engine is the health engine: it consumes Events, runs every instance's
// state machine, tells the Actuator what to do, and keeps an always-current
// Snapshot for the health endpoints.
//
// One goroutine, the loop, owns all health state. It waits for posted
// events, the next timer deadline (thresholds, backoff) or a watchdog ping;
// each iteration steps the state machines, logs and counts what happened,
// publishes a new Snapshot if anything changed, notifies subscribers, and
// only then carries out the actions on the Actuator. Readers never wait on
// it: Snapshot is an atomic load.
type Engine struct {
	act    Actuator
	clock  Clock
	log    *slog.Logger
	met    *metrics
	limit  int
	wdTime time.Duration

	snap atomic.Pointer[Snapshot]
	wd   *watchdog // nil when off
	wake chan struct{}

	qmu      sync.Mutex
	queue    []Event
	qclosed  bool
	dropping bool

	subMu   sync.Mutex
	subs    map[int]chan struct{}
	nextSub int

	lifeMu  sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	wdMu     sync.Mutex
	wdStop   func() bool
	wdClosed bool
	wdWG     sync.WaitGroup

	// Owned by the loop goroutine.
	core      *core
	timerAt   time.Time
	timerStop func() bool
}

// NewEngine builds an engine. It does no I/O and starts nothing; the
// initial Snapshot (not started, no models) is available at once.
func NewEngine(cfg EngineConfig) *Engine {
	e := &Engine{
		act:    cfg.Actuator,
		clock:  cfg.Clock,
		log:    cfg.Logger,
		limit:  cfg.QueueLimit,
		wdTime: cfg.WatchdogInterval,
		wake:   make(chan struct{}, 1),
		subs:   map[int]chan struct{}{},
		core:   newCore(cfg.Strict, cfg.Escalate),
	}
	if e.act == nil {
		e.act = nopActuator{}
	}
	if e.clock == nil {
		e.clock = realClock{}
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if e.limit <= 0 {
		e.limit = DefaultQueueLimit
	}
	if e.wdTime == 0 {
		e.wdTime = DefaultWatchdogInterval
	}
	if e.wdTime > 0 {
		e.wd = newWatchdog(e.wdTime)
	}
	e.snap.Store(e.core.snapshot(e.clock.Now()))
	e.met = newMetrics(cfg.Registerer, e.Snapshot)
	return e
}

// SetActuator sets the Actuator of an engine built before it (the model
// manager needs the engine to be built, and acts for it). It must be called
// before Start; later calls are ignored.
func (e *Engine) SetActuator(a Actuator) {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if !e.started && a != nil {
		e.act = a
	}
}

// Start starts the loop and the watchdog. They run until ctx is done or
// Close is called. Start is a no-op after the first call or after Close.
func (e *Engine) Start(ctx context.Context) {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if e.started || e.closed {
		return
	}
	e.started = true
	ctx, e.cancel = context.WithCancel(ctx)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.run(ctx)
	}()
	if e.wd != nil {
		e.wdMu.Lock()
		e.wdStop = e.clock.AfterFunc(e.wdTime, func() { e.watchdogFire(ctx) })
		e.wdMu.Unlock()
	}
}

// Close stops the loop and the watchdog and waits for both. Events posted
// afterwards are ignored; Snapshot keeps returning the last picture.
// Close is idempotent.
func (e *Engine) Close() {
	e.lifeMu.Lock()
	if e.closed {
		e.lifeMu.Unlock()
		return
	}
	e.closed = true
	cancel := e.cancel
	e.lifeMu.Unlock()

	e.qmu.Lock()
	e.qclosed = true
	e.queue = nil
	e.qmu.Unlock()

	e.wdMu.Lock()
	e.wdClosed = true
	if e.wdStop != nil {
		e.wdStop()
	}
	e.wdMu.Unlock()
	e.wdWG.Wait()

	if cancel != nil {
		cancel()
	}
	e.wg.Wait()
}

// Post hands an event to the engine. It never blocks on the engine: the
// event is appended to an in-memory queue under a short lock and the loop is
// woken. The queue is unbounded for every event that changes an instance's
// or a model's lifecycle (spawn, exit, init, stop, load, unload, and hung
// executes): those are never dropped, and there are only a few per process.
// CheckResult and ExecuteResult events (other than TimedOut ones) are
// dropped while QueueLimit events wait unprocessed; each drop is counted in
// vigil_health_events_dropped_total and the first of a burst is logged. A
// dropped check result only delays a decision by one period, because the
// next result carries the same information. Post may be called from any
// goroutine, including from inside an Actuator call; events posted before
// Start are processed when the loop starts, events posted after Close are
// ignored. The engine stamps events with its own clock when it processes
// them; Event.At is informational. Post copies ev.Policy and ev.Instances.
func (e *Engine) Post(ev Event) {
	// The loop reads the event later, on its own goroutine: copy what the
	// caller might still modify.
	if ev.Policy != nil {
		p := *ev.Policy
		p.ErrorPatterns = slices.Clone(p.ErrorPatterns)
		ev.Policy = &p
	}
	ev.Instances = slices.Clone(ev.Instances)
	e.qmu.Lock()
	if e.qclosed {
		e.qmu.Unlock()
		return
	}
	if len(e.queue) >= e.limit && droppable(ev) {
		first := !e.dropping
		e.dropping = true
		e.qmu.Unlock()
		e.met.dropped.Inc()
		if first {
			e.log.Warn("health event queue full, dropping check results", "limit", e.limit)
		}
		return
	}
	e.queue = append(e.queue, ev)
	e.qmu.Unlock()
	e.poke()
}

// droppable reports whether an event may be dropped under overload: results
// that the next result of the same check supersedes.
func droppable(ev Event) bool {
	return ev.Kind == CheckResult || (ev.Kind == ExecuteResult && !ev.TimedOut)
}

// Snapshot returns the current picture of the server's health. It never
// blocks and never allocates unless the watchdog reports the loop stalled,
// in which case the returned copy has WatchdogStalled set (the loop itself
// cannot publish while it is stuck). The result must not be modified.
func (e *Engine) Snapshot() *Snapshot {
	s := e.snap.Load()
	if stalled := e.wd.isStalled(); stalled != s.WatchdogStalled {
		c := *s
		c.WatchdogStalled = stalled
		return &c
	}
	return s
}

// Subscribe returns a channel that receives a value after any change of the
// Snapshot, and a function that cancels the subscription (idempotent). The
// channel has room for one value and keeps only the latest notification
// (as grpc-go's health server does): a slow reader sees one pending value,
// never a backlog, and should read Snapshot after each receive. The channel
// is never closed; read Snapshot once after subscribing for the current
// state.
func (e *Engine) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	e.subMu.Lock()
	id := e.nextSub
	e.nextSub++
	e.subs[id] = ch
	e.subMu.Unlock()
	return ch, sync.OnceFunc(func() {
		e.subMu.Lock()
		delete(e.subs, id)
		e.subMu.Unlock()
	})
}

// notify wakes every subscriber: drain any pending value, then fill.
func (e *Engine) notify() {
	e.subMu.Lock()
	defer e.subMu.Unlock()
	for _, ch := range e.subs {
		select {
		case <-ch:
		default:
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// poke wakes the loop without blocking.
func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// run is the loop: it only schedules; iterate does the work.
func (e *Engine) run(ctx context.Context) {
	defer e.stopTimer()
	for {
		e.iterate()
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		}
	}
}

// iterate is one turn of the loop: acknowledge the watchdog, step every
// queued event, advance timers, publish, then act.
func (e *Engine) iterate() {
	if e.wd != nil && e.wd.ack() {
		e.log.Info("health engine loop running again")
		e.notify()
	}
	now := e.clock.Now()
	batch := e.takeQueue()
	var acts []action
	var synced []chan struct{}
	for _, ev := range batch {
		if ev.synced != nil {
			synced = append(synced, ev.synced)
			continue
		}
		acts = append(acts, e.core.step(ev, now)...)
	}
	acts = append(acts, e.core.tick(now)...)
	// Record first, publish next, act last: whoever sees a state in the
	// Snapshot finds its log line and counters already written, and a slow
	// Actuator (a restart) never delays what the probes see. Putting an
	// instance into traffic is the exception: it comes before the
	// snapshot that reports it, so that a model read ready takes requests.
	e.record(acts)
	snap := e.snap.Load()
	changed := len(batch) > 0 || len(acts) > 0
	if changed {
		snap = e.core.snapshot(now)
	}
	// Into traffic before the snapshot that says so is seen (Actuator).
	e.actuate(acts, snap, true)
	if changed {
		e.snap.Store(snap)
		e.notify()
	}
	e.actuate(acts, snap, false)
	// After acting: when Sync returns, the snapshot shows the events and
	// the Actuator has been told (a loaded model is routable, not only
	// reported ready).
	for _, ch := range synced {
		close(ch)
	}
	e.arm()
}

// Sync waits until the Snapshot reflects every event posted before the
// call, or ctx ends. The repository API uses it so that a load or unload
// returns only once readiness says so.
func (e *Engine) Sync(ctx context.Context) error {
	ch := make(chan struct{})
	e.qmu.Lock()
	if e.qclosed {
		e.qmu.Unlock()
		return nil
	}
	e.queue = append(e.queue, Event{synced: ch})
	e.qmu.Unlock()
	e.poke()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) takeQueue() []Event {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	b := e.queue
	e.queue = nil
	e.dropping = false
	return b
}

// record logs and counts transitions and check results.
func (e *Engine) record(acts []action) {
	for _, a := range acts {
		switch a.kind {
		case actTransition:
			e.met.transition(a)
			e.logTransition(a)
		case actCheck:
			e.met.check(a)
		case actModelTransition:
			e.logModelTransition(a)
		}
	}
}

// actuate carries out the Actuator calls, in order: with into, only
// those that put an instance into traffic; without, the rest. No engine
// lock is held, so the Actuator may Post back into the engine and read
// Snapshot. snap is the snapshot the calls come from.
func (e *Engine) actuate(acts []action, snap *Snapshot, into bool) {
	for k, a := range acts {
		if (a.kind == actSetRoutable && a.routable) != into || superseded(acts, k) {
			continue
		}
		switch a.kind {
		case actSetRoutable:
			serving := 0
			if mh, ok := snap.Model(a.key.Model, a.key.Version); ok {
				serving = mh.Routable()
			}
			e.act.SetRoutable(a.key, a.routable, serving)
		case actRestart:
			e.act.Restart(a.key, a.reason)
		case actFail:
			e.act.Fail(a.key, a.reason)
		}
	}
}

// superseded reports whether acts[k] puts an instance in or out of
// traffic and a later action of the same turn does so again: only the
// last counts, as the two phases of actuate would otherwise run them out
// of order.
func superseded(acts []action, k int) bool {
	if acts[k].kind != actSetRoutable {
		return false
	}
	for _, b := range acts[k+1:] {
		if b.kind == actSetRoutable && b.key == acts[k].key {
			return true
		}
	}
	return false
}

// arm sets the loop's timer to the core's next deadline.
func (e *Engine) arm() {
	d := e.core.nextDeadline()
	now := e.clock.Now()
	if d.Equal(e.timerAt) && now.Before(d) {
		return // already armed for it
	}
	e.stopTimer()
	if d.IsZero() {
		return
	}
	e.timerAt = d
	e.timerStop = e.clock.AfterFunc(d.Sub(now), e.poke)
	if !e.clock.Now().Before(d) {
		// The clock passed d while the timer was armed with a duration
		// from the earlier now (a fake clock advanced by a test at that
		// moment would otherwise fire it a whole duration late).
		e.poke()
	}
}

func (e *Engine) stopTimer() {
	if e.timerStop != nil {
		e.timerStop()
	}
	e.timerAt, e.timerStop = time.Time{}, nil
}

// watchdogFire is the watchdog's timer callback. It runs outside the loop
// (in the timer's goroutine) so that it still runs when the loop is stuck.
func (e *Engine) watchdogFire(ctx context.Context) {
	e.wdMu.Lock()
	if e.wdClosed || ctx.Err() != nil {
		e.wdMu.Unlock()
		return
	}
	e.wdWG.Add(1)
	e.wdMu.Unlock()
	defer e.wdWG.Done()

	if e.wd.tick(e.clock.Now()) {
		if e.wd.isStalled() {
			e.log.Error("health engine loop stalled", "interval", e.wdTime, "missed", WatchdogMissedIntervals)
		}
		e.notify()
	}
	e.poke()

	e.wdMu.Lock()
	if !e.wdClosed {
		e.wdStop = e.clock.AfterFunc(e.wdTime, func() { e.watchdogFire(ctx) })
	}
	e.wdMu.Unlock()
}

// Log keys of the transition lines.
const (
	logKeyModel    = "model"
	logKeyVersion  = "version"
	logKeyInstance = "instance"
	logKeyFrom     = "from"
	logKeyTo       = "to"
	logKeyReason   = "reason"
	logKeyRestarts = "restarts"
	logKeyPID      = "pid"
	logKeyReady    = "ready"
)

func (e *Engine) logTransition(a action) {
	level := slog.LevelInfo
	switch InstanceState(a.to) {
	case StateFailed:
		level = slog.LevelError
	case StateUnhealthy, StateOutOfTraffic, StateExited, StateRestarting:
		level = slog.LevelWarn
	}
	e.log.Log(context.Background(), level, "instance state changed",
		logKeyModel, a.key.Model, logKeyVersion, a.key.Version, logKeyInstance, a.key.Instance,
		logKeyFrom, a.from, logKeyTo, a.to, logKeyReason, a.reason, logKeyRestarts, a.restarts, logKeyPID, a.pid)
}

func (e *Engine) logModelTransition(a action) {
	level := slog.LevelInfo
	// Models stopping during a shutdown are expected news: INFO. Whether
	// the server was draining is the engine's state when the transition
	// happened, not the published Snapshot's, which does not show the
	// batch of events being recorded yet.
	if !a.routable && !a.draining && a.to != string(ModelStateLoading) && a.to != string(ModelStateUnloading) && a.reason != "unloaded" {
		level = slog.LevelWarn
	}
	e.log.Log(context.Background(), level, "model state changed",
		logKeyModel, a.key.Model, logKeyVersion, a.key.Version,
		logKeyFrom, a.from, logKeyTo, a.to, logKeyReady, a.routable, logKeyReason, a.reason)
}

// nopActuator is the Actuator of an engine configured without one.
type nopActuator struct{}

func (nopActuator) SetRoutable(InstanceKey, bool, int) {}
func (nopActuator) Restart(InstanceKey, string)        {}
func (nopActuator) Fail(InstanceKey, string)           {}
