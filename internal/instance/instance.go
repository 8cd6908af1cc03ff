// Package instance supervises one model instance: a Python stub process
// that it spawns, reaps, checks and restarts on the health engine's word,
// and a worker that pulls batches from the model's queue while the instance
// is routable. While the worker is idle, the queue may run a request on the
// instance from the submitting goroutine instead (see scheduler.Queue).
//
// Each start of the process is a generation. A generation's goroutines (the
// reaper, the heartbeat and the hook loop) end with it; the worker lives as
// long as the instance. Every goroutine is tracked and Stop waits for all of
// them.
package instance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// Sink receives the instance's health events.
type Sink interface {
	Post(ev health.Event)
}

// Source hands out batches of work; a scheduler.Queue. While the worker
// waits in Next, the source may run requests on the instance itself
// through run.
type Source interface {
	Next(ctx context.Context, run func([]*scheduler.Task)) ([]*scheduler.Task, error)
}

// GenerationObserver is implemented by a Source whose work depends on the
// process it runs on (the sequence batcher: a sequence's state lives in the
// model): it is told when a process that initialized ends, before the
// health engine hears of it, so before any restart.
type GenerationObserver interface {
	// GenerationEnded says how: "died (killed by signal SIGKILL)", or
	// "was stopped by vigil (...)" for a stop, restart or failure vigil
	// decided.
	GenerationEnded(how string)
}

// Config describes one instance.
type Config struct {
	Key     health.InstanceKey
	Runtime Runtime
	Init    ipc.InitArgs
	Policy  health.Policy
	Queue   Source
	// Calls serves the model's BLS and model-control requests; nil
	// answers them with an error.
	Calls  Calls
	Stats  *scheduler.Stats
	Events Sink
	Logger *slog.Logger
	// FinalizeTimeout bounds finalize() on stop; StopGrace is the time
	// between SIGTERM and SIGKILL.
	FinalizeTimeout time.Duration
	StopGrace       time.Duration
	// Warmup are the model_warmup samples each process runs after
	// initialize and before it counts as initialized.
	Warmup []Warmup
	// Decoupled is the model's model_transaction_policy.decoupled: execute
	// returns None and requests answer through their response senders.
	Decoupled bool
	// MaxStreamDuration bounds how long the instance holds one request
	// after handing it to the stub (0 = DefaultMaxStreamDuration); a
	// request past it ends with DeadlineExceeded and the model sees it
	// cancelled.
	MaxStreamDuration time.Duration
}

// DefaultMaxStreamDuration is the per-request limit when
// Config.MaxStreamDuration is zero.
const DefaultMaxStreamDuration = time.Hour

// generation is one run of the stub process.
type generation struct {
	proc   *process
	ctx    context.Context // ends when the process ends
	cancel context.CancelFunc

	// pingNow asks the heartbeat for a ping at once (after a continue).
	pingNow chan struct{}
	// held is every request handed to this process and not ended.
	held *scheduler.Holder
	// ended is closed once the reaper has ended the requests the process
	// held; exit is how it ended, set before.
	ended chan struct{}
	exit  exitNote

	// Guarded by Instance.mu.
	stopReason  string // why the server ended the process, for the requests it held
	initialized bool
	exited      bool
	hung        bool
	paused      bool // stopped by a signal (the reaper saw it)
	// abortInit ends a running initialize with a cause (a heartbeat that
	// fails during it); abortBatch, a running execute. Nil when none runs.
	abortInit  context.CancelCauseFunc
	abortBatch context.CancelCauseFunc
	// pingFails counts consecutive failed pings that count; answeredAt is
	// when the stub last answered one (or the first was sent).
	pingFails  int
	answeredAt time.Time
}

// initHeartbeatLimit is how long pings may go unanswered during initialize
// before a running (not stopped) stub counts as hung there.
const initHeartbeatLimit = 30 * time.Second

// hangError is the cause of an execute or initialize aborted because the
// stub stopped answering its heartbeat.
type hangError struct{ reason string }

func (e *hangError) Error() string { return e.reason }

// Instance supervises one model instance.
type Instance struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // the instance's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup
	worker chan struct{} // closed when the worker has returned

	// execFailing is set while the last execute failed. Successes are
	// reported to the health engine only when they end a run of failures:
	// that is all the errors check needs, and it keeps the engine off the
	// request path.
	execFailing atomic.Bool

	mu         sync.Mutex
	gen        *generation
	routable   bool
	restarting bool
	// again is set when a restart is asked for while one is under way: it
	// is carried out when the current one ends, never dropped.
	again       bool
	terminal    bool // stopped: no more generations
	failed      bool // restarts exhausted: no work until a retry
	changed     chan struct{}
	session     context.Context
	endSession  context.CancelFunc
	workerStart sync.Once
}

// New returns an instance; it starts nothing.
func New(cfg Config) *Instance {
	if cfg.FinalizeTimeout == 0 {
		cfg.FinalizeTimeout = 5 * time.Second
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 2 * time.Second
	}
	if cfg.MaxStreamDuration == 0 {
		cfg.MaxStreamDuration = DefaultMaxStreamDuration
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Instance{
		cfg:     cfg,
		log:     cfg.Logger.With("instance", cfg.Key.Instance),
		ctx:     ctx,
		cancel:  cancel,
		worker:  make(chan struct{}),
		changed: make(chan struct{}),
	}
}

// Key names the instance.
func (i *Instance) Key() health.InstanceKey { return i.cfg.Key }

// Start spawns the first process and waits for initialize to return. The
// error carries the reason a load fails: the stub could not start, or the
// model raised.
func (i *Instance) Start(ctx context.Context) error {
	i.workerStart.Do(func() {
		i.wg.Add(1)
		go i.work()
	})
	return i.launch(ctx)
}

// SetRoutable puts the instance in or out of traffic.
func (i *Instance) SetRoutable(routable bool) {
	i.mu.Lock()
	i.routable = routable
	i.refreshLocked()
	i.mu.Unlock()
}

// Restart kills the current process, if any, and starts a new one. It
// returns at once. A restart asked for while one is under way is carried
// out after it (the health engine decided it on news of the process being
// started, which may already have failed): it is never dropped.
func (i *Instance) Restart(reason string) {
	i.mu.Lock()
	if i.terminal {
		i.mu.Unlock()
		return
	}
	i.failed = false
	if i.restarting {
		i.again = true
		i.mu.Unlock()
		i.log.Info("restart queued behind the one under way", "reason", reason)
		return
	}
	i.restarting = true
	i.mu.Unlock()
	i.log.Info("restarting instance", "reason", reason)
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		for {
			i.mu.Lock()
			old := i.gen
			if old != nil && old.stopReason == "" {
				old.stopReason = "restarted: " + reason
			}
			i.mu.Unlock()
			if old != nil {
				old.proc.kill()
				<-old.proc.done
			}
			_ = i.launch(i.ctx)
			i.mu.Lock()
			if !i.again || i.terminal {
				i.restarting, i.again = false, false
				i.mu.Unlock()
				return
			}
			i.again = false
			i.mu.Unlock()
		}
	}()
}

// Fail stops the instance's process: its restarts are exhausted. The
// instance takes no work until the health engine retries it (Restart, at
// the maximum backoff).
func (i *Instance) Fail(reason string) {
	i.mu.Lock()
	if i.terminal {
		i.mu.Unlock()
		return
	}
	i.failed = true
	g := i.gen
	if g != nil {
		g.stopReason = "failed for good: " + reason
	}
	i.refreshLocked()
	i.mu.Unlock()
	i.log.Warn("instance failed: restarts exhausted", "reason", reason)
	if g != nil {
		g.proc.kill()
	}
}

// Stop takes the instance out of traffic, lets the batch in flight finish
// within ctx, runs finalize, stops the process and waits for every goroutine.
func (i *Instance) Stop(ctx context.Context) {
	i.mu.Lock()
	i.terminal = true
	i.refreshLocked()
	i.mu.Unlock()
	i.cancel()
	i.workerStart.Do(func() { close(i.worker) })
	idle := true
	select {
	case <-i.worker:
	default:
		select {
		case <-i.worker:
		case <-ctx.Done():
			// A batch is still running: finalize() would only queue
			// behind it.
			idle = false
		}
	}
	i.mu.Lock()
	g := i.gen
	i.mu.Unlock()
	if g != nil {
		g.proc.stop(context.WithoutCancel(ctx), idle, i.cfg.FinalizeTimeout, i.cfg.StopGrace)
	}
	i.wg.Wait()
	i.post(health.Event{Kind: health.InstanceStopped})
}

func (i *Instance) post(ev health.Event) {
	ev.Instance = i.cfg.Key
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	i.cfg.Events.Post(ev)
}

// launch starts a generation and runs initialize. The heartbeat runs from
// the spawn on, so a stub that hangs inside initialize (stopped, or wedged
// in a C call holding the GIL) is caught as a hang, and initialize is
// bounded by initialize_timeout_seconds.
func (i *Instance) launch(ctx context.Context) error {
	i.mu.Lock()
	if i.terminal {
		i.mu.Unlock()
		return errors.New("instance is stopped")
	}
	i.mu.Unlock()

	var g *generation // set under i.mu once the process runs
	onPause := func(pe Pause) {
		i.mu.Lock()
		cur := g
		i.mu.Unlock()
		i.paused(cur, pe)
	}
	rt := i.cfg.Runtime
	if rt.Name != nil {
		k := i.cfg.Key
		rt.Args = append(slices.Clip(rt.Args), rt.Name(k.Model, k.Version, k.Instance)...)
	}
	p, err := startProcess(rt, i.log, &i.wg, onPause)
	if err != nil {
		i.post(health.Event{Kind: health.InstanceInitFailed, Reason: err.Error()})
		return err
	}
	if i.cfg.Calls != nil {
		p.client.SetHandler(stubCalls{i: i})
	}
	gctx, gcancel := context.WithCancel(i.ctx)
	i.mu.Lock()
	g = &generation{proc: p, ctx: gctx, cancel: gcancel, pingNow: make(chan struct{}, 1), held: scheduler.NewHolder(), ended: make(chan struct{})}
	i.mu.Unlock()
	i.wg.Add(1)
	go i.reap(g)
	i.mu.Lock()
	if i.terminal {
		// Stop or Fail came while the process was starting: it must not
		// outlive the instance.
		i.mu.Unlock()
		p.kill()
		<-p.done
		return errors.New("instance is stopped")
	}
	i.gen = g
	initCtx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	if limit := i.cfg.Policy.InitializeTimeout; limit > 0 {
		var cancel context.CancelFunc
		initCtx, cancel = context.WithTimeoutCause(initCtx, limit, &hangError{
			reason: fmt.Sprintf("initialize hung: it did not return within %s (initialize_timeout_seconds)", limit)})
		defer cancel()
	}
	g.abortInit = abort
	i.refreshLocked()
	i.mu.Unlock()
	i.post(health.Event{Kind: health.InstanceSpawned, PID: p.pid})
	i.wg.Add(1)
	go i.heartbeat(g)

	res, err := p.client.Init(initCtx, i.cfg.Init)
	i.mu.Lock()
	g.abortInit = nil
	i.mu.Unlock()
	if err != nil && i.ctx.Err() != nil {
		// Stop came during initialize (e.g. a restart under way at
		// shutdown): no failure to report; Stop posts InstanceStopped.
		p.kill()
		return errors.New("instance is stopped")
	}
	if err != nil {
		logRaised(i.log, "", p.pid, err)
		reason, cause := i.initFailure(g, initCtx, err)
		p.kill()
		i.mu.Lock()
		i.post(health.Event{Kind: health.InstanceInitFailed, Reason: reason, Cause: cause, PID: p.pid})
		i.mu.Unlock()
		return errors.New(reason)
	}

	if err := i.warmUp(ctx, p); err != nil {
		reason := err.Error()
		p.kill()
		i.mu.Lock()
		i.post(health.Event{Kind: health.InstanceInitFailed, Reason: reason, PID: p.pid})
		i.mu.Unlock()
		return err
	}

	i.mu.Lock()
	if g.exited {
		i.mu.Unlock()
		desc, _, _ := p.exitDescription()
		reason := "stub exited right after initialize: " + desc
		i.post(health.Event{Kind: health.InstanceInitFailed, Reason: reason, PID: p.pid})
		return errors.New(reason)
	}
	g.initialized = true
	i.refreshLocked()
	// Posted under the lock so that it precedes the reaper's exit event.
	i.post(health.Event{Kind: health.InstanceInitialized, OK: res.HasHealthHook, Reason: res.HookName, PID: p.pid})
	i.mu.Unlock()

	i.wg.Add(1)
	go i.watchStreams(g)
	if res.HasHealthHook {
		i.wg.Add(1)
		go i.hook(g, res.HookName)
	}
	return nil
}

// paused is the reaper's news that the generation's process was stopped or
// continued. A stopped process leaves traffic here at once (the worker's
// session ends, so nothing more is given to it) and the engine is told; a
// continued one is pinged at once, so that it returns as soon as it answers.
func (i *Instance) paused(g *generation, pe Pause) {
	i.mu.Lock()
	if g == nil || g.exited {
		i.mu.Unlock()
		return
	}
	g.paused = pe.Stopped
	i.refreshLocked()
	i.mu.Unlock()
	if pe.Stopped {
		i.log.Warn("stub stopped by a signal", "pid", g.proc.pid, "signal", pe.Signal)
		i.post(health.Event{Kind: health.InstanceSuspended, Signal: pe.Signal, PID: g.proc.pid})
	} else {
		i.log.Info("stub continued", "pid", g.proc.pid)
		i.post(health.Event{Kind: health.InstanceResumed, PID: g.proc.pid})
	}
	// Either way the heartbeat decides now rather than at the next period:
	// a stopped stub that holds work is a hang within heartbeat_timeout_seconds
	// of the stop, a continued one is back as soon as it answers.
	select {
	case g.pingNow <- struct{}{}:
	default:
	}
}

// initFailure explains why initialize did not return, and classifies it.
func (i *Instance) initFailure(g *generation, initCtx context.Context, err error) (string, health.Cause) {
	var me *ipc.ModelError
	if errors.As(err, &me) {
		return err.Error(), health.CauseModelRaised // "<step> raised <Type>: <message>"
	}
	var he *hangError
	if errors.As(context.Cause(initCtx), &he) && !errors.Is(err, ipc.ErrClosed) {
		return he.reason, health.CauseHang
	}
	if errors.Is(err, ipc.ErrClosed) {
		select {
		case <-g.proc.done:
		case <-time.After(time.Second):
		}
		desc, _, _ := g.proc.exitDescription()
		msg := "stub exited during initialize: " + desc
		if tail := lastLine(g.proc.out.Tail(2048)); tail != "" {
			msg += ": " + tail
		}
		return msg, health.CauseUnspecified
	}
	return fmt.Sprintf("initialize failed: %v", err), health.CauseUnspecified
}

// reap turns the end of a generation's process into an event, then ends
// the requests the process held. The event comes first, and the requests
// wait (a bounded time) for the engine to publish it: a client told that
// the instance died finds readiness saying so too, never a ready model.
func (i *Instance) reap(g *generation) {
	defer i.wg.Done()
	<-g.proc.done
	g.cancel()
	desc, code, sig := g.proc.exitDescription()
	// How the process ended, read before the engine hears of it: its
	// answer (a restart) marks the old process as stopped by vigil.
	intended := g.proc.wasIntended()
	i.mu.Lock()
	g.exited = true
	i.refreshLocked()
	report := !intended && g.initialized
	why := g.stopReason
	i.mu.Unlock()
	if report {
		// The engine words the exit from ExitCode and Signal; Reason adds
		// the stub's last line of output, which often names the cause.
		var reason string
		if tail := lastLine(g.proc.out.Tail(2048)); tail != "" && code > 0 {
			reason = tail
		}
		i.log.Warn("stub exited", "pid", g.proc.pid, "exit", desc)
		i.post(health.Event{Kind: health.InstanceExited, ExitCode: code, Signal: sig, Reason: reason, PID: g.proc.pid})
		i.syncHealth()
	}
	g.exit = exitNote{desc: desc, intended: intended, why: why}
	i.endHeld(g, g.exit)
	close(g.ended)
	i.generationEnded(g, desc, intended)
}

// exitNote is how a generation's process ended, for the requests it held.
type exitNote struct {
	desc     string // "killed by signal SIGKILL"
	intended bool   // stopped by vigil
	why      string // what vigil stopped it for
}

// syncer is the part of an event sink (the health engine) that waits until
// its snapshot shows every event posted so far.
type syncer interface {
	Sync(ctx context.Context) error
}

// exitSyncLimit bounds how long the requests of a dead process wait for
// the engine to publish its exit (a stalled engine is the watchdog's
// business, not theirs).
const exitSyncLimit = 250 * time.Millisecond

func (i *Instance) syncHealth() {
	s, ok := i.cfg.Events.(syncer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), exitSyncLimit)
	defer cancel()
	_ = s.Sync(ctx)
}

// generationEnded tells a GenerationObserver source that g's process is
// gone, when g had initialized (only then could it hold work).
func (i *Instance) generationEnded(g *generation, desc string, intended bool) {
	o, ok := i.cfg.Queue.(GenerationObserver)
	if !ok {
		return
	}
	i.mu.Lock()
	initialized := g.initialized
	i.mu.Unlock()
	if !initialized {
		return
	}
	how := "died (" + desc + ")"
	if intended {
		how = "was stopped by vigil (" + desc + ")"
	}
	o.GenerationEnded(how)
}

// refreshLocked recomputes whether the worker may take work and wakes it.
// Whether the instance is routable is the health engine's word alone
// (health.InstanceState.Routable, told through SetRoutable); the
// instance only withholds work sooner, from the moment it knows its
// current process cannot run it (not yet initialized, exited, hung,
// stopped by a signal), without waiting for the engine to agree.
func (i *Instance) refreshLocked() {
	g := i.gen
	canRun := g != nil && g.initialized && !g.exited && !g.hung && !g.paused
	takes := i.routable && canRun && !i.terminal && !i.failed
	switch {
	case takes && i.session == nil:
		i.session, i.endSession = context.WithCancel(g.ctx)
	case !takes && i.session != nil:
		i.endSession()
		i.session, i.endSession = nil, nil
	}
	close(i.changed)
	i.changed = make(chan struct{})
}

// work is the instance's worker: while routable, it takes batches from the
// queue and executes them on the current process, and lets the queue run
// requests on that process directly while it waits.
func (i *Instance) work() {
	defer i.wg.Done()
	defer close(i.worker)
	for {
		i.mu.Lock()
		session, g, changed := i.session, i.gen, i.changed
		i.mu.Unlock()
		if session == nil {
			select {
			case <-i.ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		batch, err := i.cfg.Queue.Next(session, func(b []*scheduler.Task) { i.execute(g, b) })
		if err != nil {
			if i.ctx.Err() != nil {
				return
			}
			continue
		}
		i.pipeline(g, session, batch)
	}
}

// queued is the part of a Source that lets a busy instance send queued
// work behind its batch in flight (scheduler.Queue).
type queued interface {
	TakeQueued(accept func(*scheduler.Task) bool) []*scheduler.Task
	Requeue(batch []*scheduler.Task)
}

// pipeline executes batch and, while the queue has work for this
// instance and no worker is idle, sends the next batch before the one in
// flight is answered, so that the stub begins it without waiting for the
// server (ipc/pipeline.go). One batch waits behind the running one at
// most. It is held, and its execute_timeout_seconds counts, from when it
// begins; until then it is the queue's: a batch behind one that was not
// answered (it timed out, its stub hung or died) goes back to the queue
// unless the stub had begun it.
func (i *Instance) pipeline(g *generation, session context.Context, batch []*scheduler.Task) {
	q, ok := i.cfg.Queue.(queued)
	if !ok || i.cfg.Decoupled {
		i.execute(g, batch)
		return
	}
	f := i.send(g, batch, nil)
	var began time.Time
	for f != nil {
		var next *flight
		if session.Err() == nil {
			if nb := q.TakeQueued(pipelinable); nb != nil {
				next = i.send(g, nb, f)
			}
		}
		i.finish(g, f, began)
		if next == nil {
			return
		}
		began = time.Now()
		if !next.b.Begun() && !i.takeBack(g, q, next, began) {
			return
		}
		i.begin(g, next)
		f = next
	}
}

// takeBack settles a batch sent behind one that was not answered: it goes
// back to the queue (false) unless the stub has begun it (true: it is
// waited for as usual). The stub's control thread answers the withdrawal
// while execute runs; a stub that answers nothing is being restarted (a
// hang, or its exit), and once its connection has ended Begun is final.
func (i *Instance) takeBack(g *generation, q queued, f *flight, began time.Time) bool {
	withdrawn, err := f.b.Withdraw(g.ctx)
	switch {
	case withdrawn:
		f.done()
		q.Requeue(f.tasks)
		return false
	case err == nil:
		return true
	}
	<-g.proc.done
	results, err := f.b.Wait(context.Background(), began)
	if err != nil && !f.b.Begun() {
		f.done()
		q.Requeue(f.tasks)
		return false
	}
	i.begin(g, f)
	i.answer(g, f, results, err, context.Background(), 0)
	return false
}

// pipelinable says whether a task may wait behind a batch in flight: not
// a BLS call or an ensemble's step. A call waiting behind another batch
// keeps its caller's instance busy, and the batch ahead may itself wait
// for that caller's model: queued, the call goes to whichever instance
// frees first.
func pipelinable(t *scheduler.Task) bool {
	return len(t.Req.Callers) == 0
}

// recordTiming gives the batch's compute phases to its tasks and to the
// batch statistics (Triton's compute_input/infer/output and batch_stats).
func (i *Instance) recordTiming(batch []*scheduler.Task, tm scheduler.Timing) {
	size := 0
	for _, t := range batch {
		t.SetTiming(tm)
		size += t.Size()
	}
	if i.cfg.Stats != nil {
		i.cfg.Stats.RecordBatch(size, tm)
	}
}

// execute runs one batch. Each task is held by the generation from the
// moment it goes to the stub until it ends; requests that answer through
// their response senders stay held after execute returns, while the
// worker takes the next batch.
func (i *Instance) execute(g *generation, batch []*scheduler.Task) {
	if f := i.send(g, batch, nil); f != nil {
		i.finish(g, f, time.Time{})
	}
}

// flight is a batch sent to the stub and not yet answered.
type flight struct {
	tasks   []*scheduler.Task
	b       *ipc.Batch
	ctx     context.Context // the scope of its BLS calls
	abort   context.CancelCauseFunc
	release func()
}

// send hands a batch to the stub; nil when it could not go (its tasks
// have ended, or gone back to the queue). A batch sent behind prev, in
// flight, is not held until it begins (pipeline).
func (i *Instance) send(g *generation, batch []*scheduler.Task, prev *flight) *flight {
	reqs := make([]*inference.Request, len(batch))
	for k, t := range batch {
		reqs[k] = t.Req
	}
	model := i.cfg.Key.Model
	b, err := g.proc.client.NewBatch(reqs, &batchSink{tasks: batch, model: model})
	if err != nil && prev != nil && errors.Is(err, ipc.ErrClosed) {
		i.cfg.Queue.(queued).Requeue(batch) // the process is gone; nothing went out
		return nil
	}
	if err != nil {
		for _, t := range batch {
			t.Finish(nil, apierr.Unavailablef("model %s: instance %s cannot take the request: %v", model, i.cfg.Key.Instance, err))
		}
		return nil
	}
	// The batch's BLS calls inherit its clients and its chain of callers.
	scope, release := scopeFor(i.cfg.Key.Model, batch)
	ctx, abort := context.WithCancelCause(context.WithValue(context.Background(), scopeKey{}, scope))
	f := &flight{tasks: batch, b: b, ctx: ctx, abort: abort, release: release}
	if prev == nil {
		i.begin(g, f)
		if err := b.Send(ctx); err != nil {
			i.answer(g, f, nil, err, ctx, 0)
			return nil
		}
		return f
	}
	for k, t := range batch {
		t.SetCancel(func() { _ = b.Cancel(k) })
	}
	if err := b.SendAfter(ctx, prev.b); err != nil {
		// Nothing the stub could run went out.
		f.done()
		i.cfg.Queue.(queued).Requeue(batch)
		return nil
	}
	return f
}

// begin counts a flight as an execution and makes the generation hold its
// tasks: from here on the process's end, or its hang, ends them.
func (i *Instance) begin(g *generation, f *flight) {
	if i.cfg.Stats != nil {
		i.cfg.Stats.RecordExecution()
	}
	for k, t := range f.tasks {
		if !g.held.Hold(t) {
			continue // its client has gone already
		}
		t.SetCancel(func() { _ = f.b.Cancel(k) })
		if i.cfg.Decoupled {
			t.Watch()
		}
	}
}

// done lets go of what a flight holds once it is over.
func (f *flight) done() {
	f.abort(nil)
	f.release()
}

// finish waits for a flight's reply and answers its requests. started is
// when the stub began it, if after it was sent.
func (i *Instance) finish(g *generation, f *flight, started time.Time) {
	ctx := f.ctx
	limit := i.cfg.Policy.ExecuteTimeout
	if limit > 0 && !i.cfg.Decoupled {
		// A decoupled execute may stream for as long as it makes
		// progress; watchStreams times the gaps between its responses.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	i.mu.Lock()
	g.abortBatch = f.abort
	hungAlready := g.hung
	i.mu.Unlock()
	if hungAlready {
		f.abort(&hangError{reason: "the instance's heartbeat had already failed"})
	}
	results, err := f.b.Wait(ctx, started)
	i.mu.Lock()
	g.abortBatch = nil
	i.mu.Unlock()
	i.answer(g, f, results, err, ctx, limit)
}

// answer ends a flight: it delivers the results of its reply, or the error
// that ended it.
func (i *Instance) answer(g *generation, f *flight, results []ipc.Result, err error, ctx context.Context, limit time.Duration) {
	defer f.done()
	batch, b, model := f.tasks, f.b, i.cfg.Key.Model
	if hang := hangCause(ctx, err); hang != nil {
		// The heartbeat failed while this batch ran: hangUp has answered
		// what the process held and told the engine; this batch may have
		// been handed over after that.
		err := hungError(model, i.cfg.Key.Instance, hang.reason)
		for _, t := range batch {
			t.Finish(nil, err)
		}
		g.held.FinishAll(func(*scheduler.Task) error { return err })
		return
	}
	if err == nil {
		i.recordTiming(batch, scheduler.Timing(b.Timing()))
	}
	switch {
	case err == nil:
		var firstErr string
		for k, t := range batch {
			r := results[k]
			switch {
			case r.Streamed:
				t.Watch()
			case r.Err != nil:
				if firstErr == "" {
					firstErr = r.Err.Error()
				}
				logRaised(i.log, "execute", g.proc.pid, r.Err, "request_id", t.Req.ID)
				t.Deliver(scheduler.Reply{Err: modelError(model, r.Err), Final: true})
			default:
				t.Deliver(scheduler.Reply{Response: r.Response, Final: true})
			}
		}
		if firstErr != "" {
			i.execFailing.Store(true)
			i.post(health.Event{Kind: health.ExecuteResult, OK: false, Reason: firstErr, PID: g.proc.pid})
		} else if i.execFailing.Swap(false) {
			i.post(health.Event{Kind: health.ExecuteResult, OK: true, PID: g.proc.pid})
		}
	case errors.Is(err, context.DeadlineExceeded):
		msg := fmt.Sprintf("model %s: instance %s: execute ran past execute_timeout_seconds (%s); the instance is restarted",
			model, i.cfg.Key.Instance, limit)
		i.mu.Lock()
		g.hung = true
		i.refreshLocked()
		i.mu.Unlock()
		for _, t := range batch {
			t.Finish(nil, &apierr.Error{Code: apierr.DeadlineExceeded, Msg: msg})
		}
		i.post(health.Event{Kind: health.ExecuteResult, TimedOut: true, Cause: health.CauseHang, Reason: fmt.Sprintf("execute ran past %s", limit), PID: g.proc.pid})
	case errors.Is(err, ipc.ErrClosed):
		// The reaper ends every request the process held, naming the exit;
		// a batch behind the last one answered may have been held after
		// that (pipeline), and ends the same way here.
		<-g.ended
		i.endHeld(g, g.exit)
	default:
		logRaised(i.log, "execute", g.proc.pid, err, "request_id", requestIDs(batch))
		for _, t := range batch {
			t.Deliver(scheduler.Reply{Err: modelError(model, err), Final: true})
		}
		i.execFailing.Store(true)
		i.post(health.Event{Kind: health.ExecuteResult, OK: false, Reason: err.Error(), PID: g.proc.pid})
	}
}

// hangCause is the hang that aborted a batch's ctx, when its execute
// failed because of one. A function of its own so that the batch's
// success path allocates nothing for it (errors.As takes its target's
// address, which escapes).
func hangCause(ctx context.Context, err error) *hangError {
	if err == nil {
		return nil
	}
	var hang *hangError
	if errors.As(context.Cause(ctx), &hang) {
		return hang
	}
	return nil
}

// batchSink passes the responses a batch's requests send through their
// response senders on to their tasks. It runs on the client's reader
// goroutine; delivering never blocks.
type batchSink struct {
	tasks []*scheduler.Task
	model string
}

func (s *batchSink) Response(index int, r ipc.Result, final bool) {
	if errors.Is(r.Err, ipc.ErrClosed) {
		return // the reaper ends the request with the exit's description
	}
	rep := scheduler.Reply{Response: r.Response, Final: final}
	if r.Err != nil {
		rep.Err = modelError(s.model, r.Err)
	}
	s.tasks[index].Deliver(rep)
}

// endHeld ends every request the generation's process held: it has exited,
// stopped by vigil (intended, why) or not. A stream's message says so:
// "instance repeat_0 died while streaming: killed by signal SIGKILL".
func (i *Instance) endHeld(g *generation, e exitNote) {
	if g.held.Len() == 0 {
		return
	}
	desc, intended, why := e.desc, e.intended, e.why
	model, name := i.cfg.Key.Model, i.cfg.Key.Instance
	if why == "" {
		why = "stopped"
	}
	n := g.held.FinishAll(func(t *scheduler.Task) error {
		switch {
		case intended:
			return apierr.Unavailablef("model %s: instance %s was %s while serving the request (%s)", model, name, why, desc)
		case t.Streaming():
			return died(fmt.Sprintf("model %s: instance %s died while streaming: %s", model, name, desc))
		}
		return died(fmt.Sprintf("model %s: instance %s died while executing the request (%s)", model, name, desc))
	})
	if n > 0 {
		i.log.Warn("requests ended by the stub's exit", "requests", n, "exit", desc)
	}
}

// died is the error of a request whose instance exited under it.
func died(msg string) error {
	return &apierr.Error{Code: apierr.Unavailable, Msg: msg, RetryAfter: time.Second, Err: scheduler.ErrInstanceDied}
}

// modelError classifies an error the model reported: per-request
// TritonErrors keep their code, anything that raised is Internal.
func modelError(model string, err error) error {
	var me *ipc.ModelError
	if !errors.As(err, &me) {
		return apierr.Wrap(apierr.Internal, err, "model %s", model)
	}
	return &apierr.Error{Code: me.APICode(), Msg: "model " + model + ": " + me.Error(), Err: err}
}

// heartbeat pings the stub every HeartbeatPeriod for as long as the
// generation lives, from the spawn on (initialize included).
func (i *Instance) heartbeat(g *generation) {
	defer i.wg.Done()
	t := time.NewTicker(i.cfg.Policy.HeartbeatPeriod)
	defer t.Stop()
	for {
		i.pingOnce(g)
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		case <-g.pingNow:
		}
	}
}

// pingOnce is one responsiveness check. A stub that fails it
// failure_threshold times in a row while it holds a batch cannot make
// progress: the batch is aborted as a hang. During initialize a failed ping
// counts only while the process is stopped by a signal or once no ping has
// been answered for initHeartbeatLimit: an import that loads a large
// library holds the GIL, and so keeps the control thread from answering,
// for seconds without anything being wrong (initialize_timeout_seconds
// bounds initialize as a whole).
func (i *Instance) pingOnce(g *generation) {
	timeout := i.cfg.Policy.HeartbeatTimeout
	ctx, cancel := context.WithTimeout(g.ctx, timeout)
	defer cancel()
	start := time.Now()
	err := g.proc.client.Ping(ctx)
	took := time.Since(start)
	if errors.Is(err, ipc.ErrClosed) {
		// A lost connection is almost always a process that is ending:
		// give the reaper a moment to say so.
		select {
		case <-g.ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if g.ctx.Err() != nil {
		return // the process ended; its exit is the news
	}
	ev := health.Event{Kind: health.CheckResult, Check: health.CheckHeartbeat, OK: err == nil, PID: g.proc.pid, Took: took}
	switch {
	case err == nil:
	case errors.Is(err, ipc.ErrClosed):
		// Checked first: the real error, whatever else it wraps.
		ev.Reason = fmt.Sprintf("the control connection to the stub is closed (%v)", err)
	case errors.Is(err, context.DeadlineExceeded):
		ev.TimedOut = true
		ev.Reason = fmt.Sprintf("stub did not answer a ping within %s", timeout)
		i.mu.Lock()
		if g.paused {
			ev.Reason = fmt.Sprintf("stub is stopped by a signal and did not answer a ping within %s", timeout)
		}
		i.mu.Unlock()
	default:
		ev.Reason = fmt.Sprintf("ping failed: %v", err)
	}
	now := time.Now()
	i.mu.Lock()
	if g.answeredAt.IsZero() {
		g.answeredAt = start // silence is measured from the first ping
	}
	switch {
	case err == nil:
		g.pingFails = 0
		g.answeredAt = now
	case g.initialized || g.paused || !ev.TimedOut || now.Sub(g.answeredAt) >= max(timeout, initHeartbeatLimit):
		g.pingFails++
	}
	var abortInit, abortBatch context.CancelCauseFunc
	hung := false
	if err != nil && g.pingFails >= max(i.cfg.Policy.FailureThreshold, 1) {
		switch {
		case !g.initialized:
			abortInit = g.abortInit
		case !g.hung && !errors.Is(err, ipc.ErrClosed) && (g.abortBatch != nil || g.held.Len() > 0):
			// Holding work it cannot progress on: a hang, whether the
			// process is wedged or stopped by a signal. An idle one is
			// left to the engine's thresholds.
			hung = true
			g.hung = true
			abortBatch = g.abortBatch
			i.refreshLocked()
		}
	}
	i.mu.Unlock()
	i.post(ev)
	if abortInit != nil {
		abortInit(&hangError{reason: "initialize hung: " + ev.Reason})
	}
	if hung {
		i.hangUp(g, ev.Reason)
		if abortBatch != nil {
			abortBatch(&hangError{reason: ev.Reason})
		}
	}
}

// hangUp handles a generation whose heartbeat failed while it held work:
// every request it holds (a running batch, streams) is answered 503 with
// the reason now, and the engine is told of a hang, which it restarts at
// once (no restart_threshold_seconds wait, no crash backoff).
func (i *Instance) hangUp(g *generation, reason string) {
	err := hungError(i.cfg.Key.Model, i.cfg.Key.Instance, reason)
	n := g.held.FinishAll(func(*scheduler.Task) error { return err })
	i.log.Warn("stub stopped responding while holding requests", "pid", g.proc.pid, "requests", n, "reason", reason)
	i.post(health.Event{Kind: health.ExecuteResult, TimedOut: true, Cause: health.CauseHang,
		Reason: "heartbeat failed while executing: " + reason, PID: g.proc.pid})
}

// hungError is the answer to a request held by a stub that stopped
// responding.
func hungError(model, instance, reason string) error {
	return apierr.Unavailablef("model %s: instance %s stopped responding while executing the request (%s); the instance is restarted",
		model, instance, reason)
}

// hook calls the user's health hook every Period, after the restart check
// delay, for as long as the generation lives. The loop is the single flight.
func (i *Instance) hook(g *generation, name string) {
	defer i.wg.Done()
	if d := i.cfg.Policy.RestartCheckDelay; d > 0 {
		select {
		case <-g.ctx.Done():
			return
		case <-time.After(d):
		}
	}
	t := time.NewTicker(i.cfg.Policy.Period)
	defer t.Stop()
	var logged string // the traceback last logged: a hook that keeps raising is logged once
	for {
		i.hookOnce(g, name, &logged)
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// hookOnce is one call of the user's hook. A traceback is logged when the
// hook starts raising (or raises differently), not at every period.
func (i *Instance) hookOnce(g *generation, name string, logged *string) {
	ctx, cancel := context.WithTimeout(g.ctx, i.cfg.Policy.Timeout)
	defer cancel()
	start := time.Now()
	res, err := g.proc.client.Health(ctx)
	ok, detail := res.OK, res.Detail
	took := time.Since(start)
	if g.ctx.Err() != nil {
		return
	}
	if res.Traceback != *logged {
		if res.Traceback != "" {
			logTraceback(i.log, name, g.proc.pid, detail, res.Traceback)
		}
		*logged = res.Traceback
	}
	ev := health.Event{Kind: health.CheckResult, Check: health.CheckHook, OK: ok && err == nil, Reason: detail, PID: g.proc.pid, Took: took}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		ev.TimedOut = true
		ev.Reason = fmt.Sprintf("%s() did not return within %s", name, i.cfg.Policy.Timeout)
	case err != nil:
		ev.Reason = fmt.Sprintf("%s() could not be called: %v", name, err)
	case !ok && detail == "":
		ev.Reason = name + "() returned False"
	}
	i.post(ev)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n\r\t ")
	if j := strings.LastIndexByte(s, '\n'); j >= 0 {
		return s[j+1:]
	}
	return s
}
