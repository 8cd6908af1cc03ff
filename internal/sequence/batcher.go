package sequence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/scheduler"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Strategy is how sequences share an instance's batches.
type Strategy int

// The strategies of sequence_batching.
const (
	Direct Strategy = iota
	Oldest
)

func (s Strategy) String() string {
	if s == Oldest {
		return "oldest"
	}
	return "direct"
}

// Config configures a Batcher. FromModel derives it from config.pbtxt.
type Config struct {
	// Model is the model's name, as Triton's messages give it; Name names
	// the version in vigil's own messages ("m version 1").
	Model string
	Name  string
	// MaxBatchSize is the model's max_batch_size (0: no batch dimension).
	MaxBatchSize int
	Strategy     Strategy
	// Slots is the number of sequences one instance holds: max(1,
	// max_batch_size) for direct, max_candidate_sequences for oldest.
	Slots int
	// MaxDelay and MinSlotUtilization (direct) or Preferred (oldest) decide
	// when a batch that is not full goes.
	MaxDelay           time.Duration
	MinSlotUtilization float64
	Preferred          []int
	// Idle is max_sequence_idle_microseconds.
	Idle     time.Duration
	Controls []Control
	States   []State
	// MaxBacklog bounds the sequences waiting for a slot (0: unbounded).
	MaxBacklog int
	Stats      *scheduler.Stats
	// Report, when set, is told each instance's open sequences whenever
	// they change. It must not call back into the Batcher.
	Report func(instance string, open, slots int)
	Logger *slog.Logger
	// Now is the clock (time.Now when nil); tests set it.
	Now func() time.Time
}

// Batcher is one model version's sequence batcher.
type Batcher struct {
	cfg Config
	log *slog.Logger

	stop   context.CancelFunc
	wg     sync.WaitGroup
	poke   chan struct{} // wakes the idle reaper early (tests, Close)
	closed chan struct{}

	mu        sync.Mutex
	instances []*Instance
	seqs      map[inference.CorrelationID]*sequence
	backlog   []*sequence
	lost      map[inference.CorrelationID]string
	lostOrder []inference.CorrelationID
	closeErr  error
	draining  bool
}

// maxLost bounds how many lost sequences are remembered for their error.
const maxLost = 4096

// sequence is one open sequence.
type sequence struct {
	id   inference.CorrelationID
	inst *Instance // nil while in the backlog
	slot int
	// session is the instance worker's session when the sequence got its
	// slot: it ends with the process (or earlier, out of traffic), so a
	// sequence whose session lives belongs to a later process.
	session context.Context
	// pending are the requests waiting to run, in arrival order.
	pending []*item
	running bool // a request of the sequence is with the instance
	// ended is set once the END request arrived: later requests need a
	// new START. The slot is released when it has run.
	ended bool
	// superseded is set when a new START took over the correlation ID.
	superseded bool
	last       time.Time
	state      map[string]tensor.Tensor
	// stateUnknown is set when a request that carries implicit state was
	// abandoned while it ran: the next one cannot be given its state.
	stateUnknown bool
}

// item is one request of a sequence.
type item struct {
	b      *Batcher
	seq    *sequence
	ctx    context.Context
	task   *scheduler.Task
	start  bool
	end    bool
	handed bool // given to the instance (guarded by Batcher.mu)
}

// failure is a task to fail once Batcher.mu is released (its hook takes
// the lock).
type failure struct {
	t   *scheduler.Task
	err error
}

type failures []failure

func (fs failures) finish() {
	for _, f := range fs {
		f.t.Finish(nil, f.err)
	}
}

// abandoned finishes a task whose caller gave up.
type abandoned struct{ err error }

func (a *abandoned) Error() string { return a.err.Error() }
func (a *abandoned) Unwrap() error { return a.err }

// New returns a batcher for instances named by names, and starts its idle
// reaper; Close stops it.
func New(cfg Config, names []string) *Batcher {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Slots < 1 {
		cfg.Slots = 1
	}
	if cfg.Stats == nil {
		cfg.Stats = &scheduler.Stats{}
	}
	ctx, stop := context.WithCancel(context.Background())
	b := &Batcher{
		cfg:    cfg,
		log:    cfg.Logger,
		stop:   stop,
		poke:   make(chan struct{}, 1),
		closed: make(chan struct{}),
		seqs:   map[inference.CorrelationID]*sequence{},
		lost:   map[inference.CorrelationID]string{},
	}
	for _, n := range names {
		b.instances = append(b.instances, &Instance{b: b, name: n, slots: make([]*sequence, cfg.Slots), wake: make(chan struct{}, 1)})
	}
	if cfg.Idle > 0 {
		b.wg.Add(1)
		go b.reaper(ctx)
	}
	return b
}

// Instance returns the source of instance i's batches.
func (b *Batcher) Instance(i int) *Instance { return b.instances[i] }

// Submit runs req, a request of a sequence, on the instance that holds its
// sequence, and waits for its result or for ctx to end. size is its batch
// dimension.
func (b *Batcher) Submit(ctx context.Context, req *inference.Request, size int) (*inference.Response, error) {
	if err := b.check(req, size); err != nil {
		return nil, err
	}
	it := &item{b: b, ctx: ctx, start: req.Sequence.Start, end: req.Sequence.End}
	// State outputs must come back even when the client names only some
	// outputs; they are taken out before the response goes on.
	if len(req.Outputs) > 0 {
		req.Outputs = slices.Clip(req.Outputs) // the caller's array stays as it is
		for _, st := range b.cfg.States {
			req.Outputs = append(req.Outputs, inference.RequestedOutput{Name: st.Output})
		}
	}
	it.task = scheduler.NewTask(ctx, req, size, it.finish)

	b.mu.Lock()
	wake, failed, err := b.admitLocked(it)
	var direct []*scheduler.Task
	var run func([]*scheduler.Task)
	if err == nil && wake != nil {
		var more failures
		direct, run, more = wake.claimLocked(it)
		failed = append(failed, more...)
	}
	b.mu.Unlock()
	failed.finish()
	if err != nil {
		return nil, err
	}
	if direct != nil {
		b.report()
		wake.runClaimed(direct, run)
	} else {
		b.signal(wake)
	}
	b.report()

	t := it.task
	r, ok := t.Await(ctx)
	if !ok {
		if t.Finish(nil, &abandoned{ctx.Err()}) {
			b.cfg.Stats.Record(t, scheduler.Result{Err: ctx.Err()})
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, apierr.Wrap(apierr.DeadlineExceeded, ctx.Err(), "model %s: request deadline exceeded", b.cfg.Name)
			}
			return nil, ctx.Err()
		}
		r = t.Result() // it ended meanwhile
	}
	b.cfg.Stats.Record(t, r)
	if r.Err == nil && r.Response == nil {
		return nil, apierr.New(apierr.Internal, "model %s ended the request without a response", b.cfg.Name)
	}
	return r.Response, r.Err
}

// check applies Triton's per-request rules of the sequence batcher.
func (b *Batcher) check(req *inference.Request, size int) error {
	id := req.Sequence.ID
	if id.IsZero() {
		return apierr.New(apierr.InvalidArgument, "inference request to model '%s' must specify a non-zero or non-empty correlation ID", b.cfg.Model)
	}
	if b.cfg.MaxBatchSize > 0 && size != 1 {
		return apierr.New(apierr.InvalidArgument, "inference request to model '%s' must specify batch-size 1 due to requirements of sequence batcher", b.cfg.Model)
	}
	for _, c := range b.cfg.Controls {
		if c.Kind == KindCorrID && id.IsString && c.Datatype != tensor.Bytes {
			return apierr.New(apierr.InvalidArgument, "[request id: %s] sequence batching control '%s' data-type is 'TYPE_STRING', but model '%s' expects '%s'",
				requestID(req), c.Name, b.cfg.Model, configType(c.Datatype))
		}
	}
	return nil
}

func requestID(req *inference.Request) string {
	if req.ID == "" {
		return "<id_unknown>"
	}
	return req.ID
}

// admitLocked files it under its sequence: a START opens one (on a free
// slot, or in the backlog), any other request joins the open one. It
// returns the instance to wake, and the requests of a sequence the START
// ended early.
func (b *Batcher) admitLocked(it *item) (wake *Instance, failed failures, err error) {
	if b.closeErr != nil {
		return nil, nil, b.closeErr
	}
	req := it.task.Req
	id := req.Sequence.ID
	now := b.cfg.Now()
	seq := b.seqs[id]
	if it.start {
		if b.draining {
			return nil, nil, apierr.Unavailablef("Server is stopping, scheduler for model has stopped accepting new inference requests")
		}
		if b.cfg.MaxBacklog > 0 && len(b.backlog) >= b.cfg.MaxBacklog && b.freeSlotLocked() == nil {
			return nil, nil, &apierr.Error{Code: apierr.ResourceExhausted, RetryAfter: time.Second,
				Msg: fmt.Sprintf("model %s: all %d sequence slots are busy and %d sequences already wait for one (--max-queue-size)",
					b.cfg.Name, b.cfg.Slots*len(b.instances), len(b.backlog))}
		}
		if b.liveLocked() == 0 {
			// As the queue of a model without sequences says it: the model
			// manager adds the readiness reason and Retry-After.
			return nil, nil, &apierr.Error{Code: apierr.Unavailable, RetryAfter: time.Second, Err: scheduler.ErrNoRoutable,
				Msg: fmt.Sprintf("model %s has no routable instance", b.cfg.Name)}
		}
		if seq != nil {
			b.log.Warn("sequence started again before it ended; the previous sequence is ended early",
				"sequence", id.String())
			failed = b.supersedeLocked(seq)
		}
		delete(b.lost, id)
		seq = &sequence{id: id, last: now}
		b.seqs[id] = seq
		b.backlog = append(b.backlog, seq)
		b.assignLocked()
		if len(b.backlog) == 1 && seq.inst == nil {
			// Logged when waiting begins, not for every waiting request.
			b.log.Warn("every sequence slot is busy: new sequences wait for one",
				"slots", b.cfg.Slots*len(b.instances), "sequence", id.String())
		}
	} else {
		switch {
		case seq == nil || seq.ended:
			if msg, ok := b.lost[id]; ok {
				return nil, nil, apierr.Unavailablef("%s", msg)
			}
			return nil, nil, apierr.New(apierr.InvalidArgument, "inference request for sequence %s to model '%s' must specify the START flag on the first request of the sequence", id, b.cfg.Model)
		case seq.stateUnknown:
			return nil, nil, apierr.New(apierr.Unavailable, "sequence %s of model %s cannot continue: a request of it was abandoned while it ran, so its implicit state is unknown; start the sequence again", id, b.cfg.Name)
		}
	}
	it.seq = seq
	if it.end {
		seq.ended = true
	}
	seq.pending = append(seq.pending, it)
	seq.last = now
	return seq.inst, failed, nil
}

// supersedeLocked ends seq early because a new START took its ID: its
// waiting requests fail, and its slot is released once nothing of it runs.
func (b *Batcher) supersedeLocked(seq *sequence) failures {
	seq.superseded = true
	seq.ended = true
	delete(b.seqs, seq.id)
	var failed failures
	for _, it := range seq.pending {
		failed = append(failed, failure{it.task, apierr.New(apierr.InvalidArgument,
			"sequence %s of model %s was ended early: a new request with the START flag took its correlation ID", seq.id, b.cfg.Name)})
	}
	if !seq.running {
		b.releaseLocked(seq)
	}
	return failed
}

// freeSlotLocked returns an instance in traffic with a free slot, the one
// holding the fewest sequences, or nil.
func (b *Batcher) freeSlotLocked() *Instance {
	var best *Instance
	bestOpen := 0
	for _, in := range b.instances {
		if !in.liveLocked() {
			continue
		}
		open := in.openLocked()
		if open < len(in.slots) && (best == nil || open < bestOpen) {
			best, bestOpen = in, open
		}
	}
	return best
}

func (b *Batcher) liveLocked() int {
	n := 0
	for _, in := range b.instances {
		if in.liveLocked() {
			n++
		}
	}
	return n
}

// assignLocked gives backlogged sequences, oldest first, the free slots of
// instances in traffic.
func (b *Batcher) assignLocked() {
	for len(b.backlog) > 0 {
		in := b.freeSlotLocked()
		if in == nil {
			return
		}
		seq := b.backlog[0]
		b.backlog = b.backlog[1:]
		slot := slices.Index(in.slots, nil)
		in.slots[slot] = seq
		seq.inst, seq.slot, seq.session = in, slot, in.session
		in.dirty = true
		if len(seq.pending) > 0 {
			in.signal()
		}
	}
}

// releaseLocked frees seq's slot (or takes it out of the backlog) and
// hands the slot on.
func (b *Batcher) releaseLocked(seq *sequence) {
	if b.seqs[seq.id] == seq {
		delete(b.seqs, seq.id)
	}
	if in := seq.inst; in != nil {
		if in.slots[seq.slot] == seq {
			in.slots[seq.slot] = nil
			in.dirty = true
		}
		seq.inst = nil
	} else if k := slices.Index(b.backlog, seq); k >= 0 {
		b.backlog = slices.Delete(b.backlog, k, k+1)
	}
	b.assignLocked()
}

// rememberLostLocked keeps msg as the answer for id's later requests.
func (b *Batcher) rememberLostLocked(id inference.CorrelationID, msg string) {
	if _, ok := b.lost[id]; !ok {
		b.lostOrder = append(b.lostOrder, id)
	}
	b.lost[id] = msg
	for len(b.lostOrder) > maxLost {
		delete(b.lost, b.lostOrder[0])
		b.lostOrder = b.lostOrder[1:]
	}
}

// finish is every task's hook: it runs once, when the task's result is
// known, on the goroutine that finished it. For a request that ran, that is
// the instance's worker, before it takes its next batch, so the sequence's
// next request sees the state this one left.
func (it *item) finish(r scheduler.Result) scheduler.Result {
	b := it.b
	var ab *abandoned
	isAbandoned := errors.As(r.Err, &ab)
	b.mu.Lock()
	seq := it.seq
	if !it.handed {
		// It never ran: its caller gave up, or the batcher failed it.
		if k := slices.Index(seq.pending, it); k >= 0 {
			seq.pending = slices.Delete(seq.pending, k, k+1)
		}
		b.mu.Unlock()
		if isAbandoned {
			r.Err = ab.err
		}
		return r
	}
	seq.running = false
	seq.last = b.cfg.Now()
	switch {
	case isAbandoned:
		r.Err = ab.err
		if len(b.cfg.States) > 0 {
			seq.stateUnknown = true
		}
	case r.Err == nil && len(b.cfg.States) > 0:
		r = b.takeStateLocked(seq, r)
	}
	if it.end || seq.superseded {
		b.releaseLocked(seq)
	} else if seq.inst != nil && len(seq.pending) > 0 {
		seq.inst.signal()
	}
	b.mu.Unlock()
	b.report()
	return r
}

// Len is the number of requests waiting to run.
func (b *Batcher) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.seqs {
		n += len(s.pending)
	}
	return n
}

// Open is the number of open sequences, in slots or in the backlog.
func (b *Batcher) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.seqs)
}

// Drain refuses new sequences from now on (the server is stopping); open
// sequences go on.
func (b *Batcher) Drain() {
	b.mu.Lock()
	b.draining = true
	b.mu.Unlock()
}

// Close fails every waiting request with err, refuses new ones and stops
// the idle reaper. Idempotent.
func (b *Batcher) Close(err error) {
	b.mu.Lock()
	if b.closeErr != nil {
		b.mu.Unlock()
		return
	}
	b.closeErr = err
	var failed []*scheduler.Task
	for _, s := range b.seqs {
		for _, it := range s.pending {
			failed = append(failed, it.task)
		}
	}
	for _, in := range b.instances {
		in.signal()
	}
	b.mu.Unlock()
	close(b.closed)
	for _, t := range failed {
		t.Finish(nil, err)
	}
	b.stop()
	b.wg.Wait()
}

// signal wakes in, if any.
func (b *Batcher) signal(in *Instance) {
	if in != nil {
		in.signal()
	}
}

// report tells Config.Report of every instance whose open sequences
// changed.
func (b *Batcher) report() {
	if b.cfg.Report == nil {
		return
	}
	type change struct {
		name        string
		open, slots int
	}
	var changes []change
	b.mu.Lock()
	for _, in := range b.instances {
		if in.dirty {
			in.dirty = false
			changes = append(changes, change{in.name, in.openLocked(), len(in.slots)})
		}
	}
	b.mu.Unlock()
	for _, c := range changes {
		b.cfg.Report(c.name, c.open, c.slots)
	}
}

// reaper releases idle sequences: a step function (reapIdle) and a loop
// that sleeps until the next sequence could become idle.
func (b *Batcher) reaper(ctx context.Context) {
	defer b.wg.Done()
	for {
		next := b.reapIdle(b.cfg.Now())
		d := b.cfg.Idle
		if !next.IsZero() {
			d = min(d, next.Sub(b.cfg.Now()))
		}
		t := time.NewTimer(max(d, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-b.poke:
		case <-t.C:
		}
		t.Stop()
	}
}

// reapIdle releases the sequences idle since before now-Idle and returns
// when the next open sequence would become idle (zero: none is open).
func (b *Batcher) reapIdle(now time.Time) time.Time {
	var next time.Time
	b.mu.Lock()
	for _, s := range b.seqs {
		if len(s.pending) > 0 || s.running {
			continue
		}
		deadline := s.last.Add(b.cfg.Idle)
		if !now.Before(deadline) {
			b.log.Info("sequence idle: released", "sequence", s.id.String(), "idle", b.cfg.Idle.String())
			b.releaseLocked(s)
			continue
		}
		if next.IsZero() || deadline.Before(next) {
			next = deadline
		}
	}
	b.mu.Unlock()
	b.report()
	return next
}
