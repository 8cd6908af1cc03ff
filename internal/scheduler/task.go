package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

// ErrInstanceDied is wrapped by the error that ends a request whose
// instance exited while holding it.
var ErrInstanceDied = errors.New("the instance died")

// Result is what a task ends with.
type Result struct {
	Response *inference.Response
	Err      error
}

// Reply is one response of a request, or its end. A request has any number
// of replies before one with Final set; the final one may carry a response,
// an error, or neither (a flag-only FINAL). A non-final reply may carry an
// error too: a decoupled model can send an error response and go on.
type Reply struct {
	Response *inference.Response
	Err      error
	Final    bool
}

// MaxBacklog bounds the responses of one streamed request that wait for
// their client to read them; past it the request ends with
// ResourceExhausted and the model sees it cancelled.
const MaxBacklog = 8192

// Task is one request waiting for, or being served by, an instance.
//
// A task ends exactly once, and that end is the one event every account
// follows: the model's FINAL, an error, its instance's death or stall,
// the client going away, or a limit. Whatever ends it first wins; replies
// that come later are dropped and counted.
type Task struct {
	Req      *inference.Request
	ctx      context.Context
	size     int
	enqueued time.Time
	started  time.Time
	stream   bool          // the submitter takes every reply (Queue.Stream)
	wake     chan struct{} // buffered 1: delivering never blocks

	mu        sync.Mutex
	replies   []Reply // delivered and not yet taken
	finished  bool
	final     Result    // for Submit: the one response, or the error
	responses int       // responses delivered before the end
	dropped   int       // replies delivered after the end
	progress  time.Time // when it was handed over, or last made progress
	heldAt    time.Time
	watched   bool    // Holder.Overdue applies
	holder    *Holder // the instance holding the task, if any
	onCancel  func()  // tells the model the request ended without it
	timing    Timing  // the compute phases of the batch that served it
	onDrop    func()  // counts a reply that came after the end
	// onEnd, set by NewTask, sees the result when the task ends, on the
	// goroutine that ends it; result waits for it (hooked).
	onEnd  func(Result) Result
	hooked chan struct{}
}

func newTask(ctx context.Context, req *inference.Request, size int, stream bool) *Task {
	return &Task{Req: req, ctx: ctx, size: size, enqueued: time.Now(), stream: stream, wake: make(chan struct{}, 1)}
}

func (t *Task) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Streaming reports whether the submitter takes every response (a stream)
// rather than exactly one.
func (t *Task) Streaming() bool { return t.stream }

// Context is the submitter's context: it ends when the client goes away.
func (t *Task) Context() context.Context { return t.ctx }

// Deliver passes on one reply the model sent. A Final reply ends the task
// without calling the cancel hook (the model knows). It reports false when
// the task had already ended: the reply is dropped.
func (t *Task) Deliver(r Reply) bool {
	t.mu.Lock()
	if t.finished {
		t.dropped++
		drop := t.onDrop
		t.mu.Unlock()
		r.Response.Done() // nobody will read it
		if drop != nil && (r.Response != nil || r.Err != nil) {
			drop()
		}
		return false
	}
	t.progress = time.Now()
	if r.Response != nil {
		t.responses++
	}
	if t.stream && len(t.replies) >= MaxBacklog && !r.Final {
		t.mu.Unlock()
		r.Response.Done()
		t.Finish(nil, &apierr.Error{Code: apierr.ResourceExhausted, Msg: fmt.Sprintf(
			"the client did not read the responses of request %q: %d were waiting", t.Req.ID, MaxBacklog)})
		return false
	}
	if t.stream {
		t.replies = append(t.replies, r)
	} else if r.Response != nil || r.Err != nil {
		// One response per request: the first one counts (the stub
		// refuses a second from a default-mode model anyway).
		if t.final.Response == nil && t.final.Err == nil {
			t.final = Result{Response: r.Response, Err: r.Err}
		}
	}
	if !r.Final {
		t.mu.Unlock()
		t.signal()
		return true
	}
	h := t.endLocked()
	t.mu.Unlock()
	// Released before the waiter wakes: whoever sees the end never finds
	// the task still counted as held.
	h.release(t)
	t.runEnd()
	t.signal()
	return true
}

// Finish ends the task with a response or an error, unless it has already
// ended; it reports whether this call ended it. The model is told through
// the cancel hook (see SetCancel), as it did not end the request itself.
func (t *Task) Finish(resp *inference.Response, err error) bool {
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		resp.Done() // nobody will read it
		return false
	}
	if resp != nil {
		t.responses++
	}
	if t.stream {
		t.replies = append(t.replies, Reply{Response: resp, Err: err, Final: true})
	}
	t.final = Result{Response: resp, Err: err}
	cancel := t.onCancel
	h := t.endLocked()
	t.mu.Unlock()
	h.release(t)
	t.runEnd()
	t.signal()
	if cancel != nil {
		cancel()
	}
	return true
}

// endLocked marks the task ended and returns its holder.
func (t *Task) endLocked() *Holder {
	t.finished = true
	t.onCancel = nil
	h := t.holder
	t.holder = nil
	return h
}

// SetCancel sets the hook that tells the model its request ended without
// it (the client went away, a limit passed). It is called at most once,
// by the Finish that ends the task.
func (t *Task) SetCancel(f func()) {
	t.mu.Lock()
	if !t.finished {
		t.onCancel = f
	}
	t.mu.Unlock()
}

// Watch makes the time between the task's replies count against
// Holder.Overdue, from now on.
func (t *Task) Watch() {
	t.mu.Lock()
	t.watched = true
	t.progress = time.Now()
	t.mu.Unlock()
}

// Responses is the number of responses the task delivered before it ended,
// and Dropped the number that came after.
func (t *Task) Responses() (delivered, dropped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.responses, t.dropped
}

// take returns the replies not yet taken and whether the task has ended.
func (t *Task) take() ([]Reply, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.replies
	t.replies = nil
	return r, t.finished
}

// ended reports whether the task has ended.
func (t *Task) ended() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.finished
}

// result is the task's one response or error, once it has ended.
// SetTiming records the compute phases of the batch that served t, for
// the statistics; call it before delivering the final reply.
func (t *Task) SetTiming(tm Timing) {
	t.mu.Lock()
	t.timing = tm
	t.mu.Unlock()
}

func (t *Task) timingOf() Timing {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.timing
}

// Size is the task's batch dimension (1 for models that do not batch).
func (t *Task) Size() int { return t.size }

func (t *Task) result() Result {
	if t.hooked != nil {
		<-t.hooked
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.final
}

// Holder tracks the tasks one instance holds: handed to its stub and not
// ended. A task leaves it when it ends, whatever ends it, so the count is
// never off.
type Holder struct {
	mu    sync.Mutex
	tasks map[*Task]struct{}
}

// NewHolder returns an empty holder.
func NewHolder() *Holder { return &Holder{tasks: make(map[*Task]struct{})} }

// Hold registers t; it reports false when t has already ended.
func (h *Holder) Hold(t *Task) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.finished {
		return false
	}
	now := time.Now()
	if t.progress.IsZero() {
		t.progress = now
	}
	t.heldAt = now
	t.holder = h
	h.mu.Lock()
	h.tasks[t] = struct{}{}
	h.mu.Unlock()
	return true
}

func (h *Holder) release(t *Task) {
	if h == nil {
		return
	}
	h.mu.Lock()
	delete(h.tasks, t)
	h.mu.Unlock()
}

// Streams is the number of tasks held whose submitter takes every
// response (Queue.Stream).
func (h *Holder) Streams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for t := range h.tasks {
		if t.stream {
			n++
		}
	}
	return n
}

// Len is the number of tasks held.
func (h *Holder) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.tasks)
}

func (h *Holder) list() []*Task {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Task, 0, len(h.tasks))
	for t := range h.tasks {
		out = append(out, t)
	}
	return out
}

// FinishAll ends every task held with the error errFor gives it (the
// instance died) and returns how many it ended.
func (h *Holder) FinishAll(errFor func(*Task) error) int {
	n := 0
	for _, t := range h.list() {
		if t.Finish(nil, errFor(t)) {
			n++
		}
	}
	return n
}

// Overdue returns the watched tasks whose last reply (or start) is more
// than limit before now.
func (h *Holder) Overdue(now time.Time, limit time.Duration) []*Task {
	var out []*Task
	for _, t := range h.list() {
		t.mu.Lock()
		late := t.watched && !t.finished && now.Sub(t.progress) > limit
		t.mu.Unlock()
		if late {
			out = append(out, t)
		}
	}
	return out
}

// Expired returns the tasks held for longer than limit.
func (h *Holder) Expired(now time.Time, limit time.Duration) []*Task {
	var out []*Task
	for _, t := range h.list() {
		t.mu.Lock()
		late := !t.finished && now.Sub(t.heldAt) > limit
		t.mu.Unlock()
		if late {
			out = append(out, t)
		}
	}
	return out
}
