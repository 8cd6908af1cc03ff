package scheduler

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

// streamWorker takes one task from q and hands it to serve.
func streamWorker(t *testing.T, ctx context.Context, q *Queue, serve func(*Task)) {
	t.Helper()
	go func() {
		b, err := q.Next(ctx, nil)
		if err != nil {
			return
		}
		serve(b[0])
	}()
}

func TestStreamDeliversRepliesInOrderUntilFinal(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	h := NewHolder()
	streamWorker(t, ctx, q, func(tk *Task) {
		if !h.Hold(tk) {
			t.Error("Hold refused a live task")
		}
		for i := range 3 {
			tk.Deliver(Reply{Response: &inference.Response{ID: string(rune('a' + i))}})
		}
		tk.Deliver(Reply{Final: true}) // flag-only FINAL
	})
	var got []string
	var finals int
	err := q.Stream(ctx, &inference.Request{ID: "r"}, 1, func(r Reply) error {
		if r.Response != nil {
			got = append(got, r.Response.ID)
		}
		if r.Final {
			finals++
			if r.Response != nil || r.Err != nil {
				t.Errorf("the flag-only final carries %+v", r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "abc"; joined(got) != want || finals != 1 {
		t.Errorf("responses %v (%d finals), want %s and one final", got, finals, want)
	}
	if n := h.Len(); n != 0 {
		t.Errorf("holder still holds %d tasks after FINAL", n)
	}
	if s := q.stats.Snapshot(); s.Success.Count != 1 {
		t.Errorf("stats %+v, want one success", s)
	}
}

func joined(s []string) string {
	out := ""
	for _, x := range s {
		out += x
	}
	return out
}

func TestTaskEndsOnceAndLateRepliesAreDropped(t *testing.T) {
	tk := newTask(context.Background(), &inference.Request{}, 1, true)
	h := NewHolder()
	h.Hold(tk)
	var cancels atomic.Int32
	tk.SetCancel(func() { cancels.Add(1) })
	if !tk.Deliver(Reply{Response: &inference.Response{}}) {
		t.Fatal("first reply refused")
	}
	if !tk.Finish(nil, errors.New("died")) {
		t.Fatal("Finish did not end the task")
	}
	if tk.Finish(nil, errors.New("again")) {
		t.Error("a second Finish ended the task again")
	}
	var released atomic.Int32
	if tk.Deliver(Reply{Response: &inference.Response{Release: func() { released.Add(1) }}, Final: true}) {
		t.Error("a reply after the end was delivered")
	}
	if tk.Finish(&inference.Response{Release: func() { released.Add(1) }}, nil) {
		t.Error("a Finish after the end ended the task")
	}
	if released.Load() != 2 {
		t.Errorf("%d of the 2 dropped responses were released", released.Load())
	}
	if d, dr := tk.Responses(); d != 1 || dr != 1 {
		t.Errorf("Responses = %d delivered, %d dropped; want 1, 1", d, dr)
	}
	if cancels.Load() != 1 {
		t.Errorf("cancel hook ran %d times, want once", cancels.Load())
	}
	if h.Len() != 0 {
		t.Errorf("holder holds %d", h.Len())
	}
	if h.Hold(tk) {
		t.Error("Hold took an ended task")
	}

	// The model's own FINAL does not call the cancel hook.
	tk = newTask(context.Background(), &inference.Request{}, 1, true)
	tk.SetCancel(func() { cancels.Add(10) })
	tk.Deliver(Reply{Final: true})
	if cancels.Load() != 1 {
		t.Error("the model's FINAL called the cancel hook")
	}
}

func TestStreamCancelledByItsContextTellsTheModel(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	cancelled := make(chan struct{})
	sctx, cancel := context.WithCancel(ctx)
	streamWorker(t, ctx, q, func(tk *Task) {
		tk.SetCancel(func() { close(cancelled) })
		tk.Deliver(Reply{Response: &inference.Response{}})
	})
	err := q.Stream(sctx, &inference.Request{}, 1, func(r Reply) error {
		cancel() // the client goes away after the first response
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Stream = %v, want context.Canceled", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the cancel hook was not called")
	}
}

func TestStreamWhoseClientStopsReadingEnds(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	tasks := make(chan *Task, 1)
	streamWorker(t, ctx, q, func(tk *Task) { tasks <- tk })
	first := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- q.Stream(ctx, &inference.Request{ID: "slow"}, 1, func(r Reply) error {
			if r.Final {
				return nil
			}
			select {
			case <-first:
			default:
				close(first)
				<-ctx.Done() // never reads again
			}
			return nil
		})
	}()
	tk := <-tasks
	tk.Deliver(Reply{Response: &inference.Response{}})
	<-first
	var refused bool
	for i := 0; i < MaxBacklog+1; i++ {
		if !tk.Deliver(Reply{Response: &inference.Response{}}) {
			refused = true
			break
		}
	}
	if !refused {
		t.Fatalf("%d replies waiting and none refused", MaxBacklog+1)
	}
	if r := tk.result(); apierr.CodeOf(r.Err) != apierr.ResourceExhausted {
		t.Errorf("ended with %v, want ResourceExhausted", r.Err)
	}
}

func TestHolderOverdueAndExpired(t *testing.T) {
	h := NewHolder()
	a := newTask(context.Background(), &inference.Request{ID: "a"}, 1, true)
	b := newTask(context.Background(), &inference.Request{ID: "b"}, 1, true)
	h.Hold(a)
	h.Hold(b)
	a.Watch()
	now := time.Now()
	if got := h.Overdue(now.Add(2*time.Second), time.Second); len(got) != 1 || got[0] != a {
		t.Errorf("Overdue = %v, want only the watched task", got)
	}
	a.Deliver(Reply{Response: &inference.Response{}}) // progress
	if got := h.Overdue(time.Now().Add(500*time.Millisecond), time.Second); len(got) != 0 {
		t.Errorf("Overdue after progress = %v", got)
	}
	if got := h.Expired(now.Add(2*time.Hour), time.Hour); len(got) != 2 {
		t.Errorf("Expired = %v, want both", got)
	}
	if n := h.FinishAll(func(*Task) error { return errors.New("x") }); n != 2 || h.Len() != 0 {
		t.Errorf("FinishAll = %d, Len = %d", n, h.Len())
	}
}
