package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

const testTimeout = 5 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

type outcome struct {
	resp *inference.Response
	err  error
}

func submit(ctx context.Context, q *Queue, id string, size int) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		r, err := q.Submit(ctx, &inference.Request{ID: id}, size)
		ch <- outcome{r, err}
	}()
	return ch
}

// waitLen polls until the queue holds n requests.
func waitLen(t *testing.T, q *Queue, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for q.Len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want %d", q.Len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSubmitWithoutRoutableInstanceFailsAtOnce(t *testing.T) {
	q := NewQueue("m version 1", Batching{}, &Stats{})
	_, err := q.Submit(testCtx(t), &inference.Request{}, 1)
	if got, want := apierr.CodeOf(err), apierr.Unavailable; got != want {
		t.Fatalf("code %v, want %v (err %v)", got, want, err)
	}
	if apierr.RetryAfter(err) == 0 {
		t.Errorf("503 without Retry-After")
	}
}

func TestNextHandsOutOneRequestAndFinishDelivers(t *testing.T) {
	ctx := testCtx(t)
	stats := &Stats{}
	q := NewQueue("m", Batching{}, stats)
	q.SetRoutable(1)
	done := submit(ctx, q, "a", 1)
	batch, err := q.Next(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(batch) != 1 || batch[0].Req.ID != "a" {
		t.Fatalf("batch %v", batch)
	}
	batch[0].Finish(&inference.Response{ID: "a"}, nil)
	o := <-done
	if o.err != nil || o.resp.ID != "a" {
		t.Fatalf("got %+v", o)
	}
	if s := stats.Snapshot(); s.Success.Count != 1 || s.InferenceCount != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestLosingLastRoutableInstanceFailsWaitingRequests(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	done := submit(ctx, q, "a", 1)
	waitLen(t, q, 1)
	q.SetRoutable(0)
	o := <-done
	if apierr.CodeOf(o.err) != apierr.Unavailable {
		t.Fatalf("err %v, want unavailable", o.err)
	}
}

func TestDynamicBatchingGathersUpToMaxBatchSize(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{MaxBatchSize: 4, Dynamic: true}, &Stats{})
	q.SetRoutable(1)
	var outs []<-chan outcome
	for i, size := range []int{2, 1, 2} {
		outs = append(outs, submit(ctx, q, string(rune('a'+i)), size))
		waitLen(t, q, i+1)
	}
	batch, err := q.Next(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(batch), 2; got != want {
		t.Fatalf("batch of %d requests, want %d (sizes 2+1 fit in 4, +2 does not)", got, want)
	}
	rest, err := q.Next(ctx, nil)
	if err != nil || len(rest) != 1 {
		t.Fatalf("second batch %v, %v", rest, err)
	}
	for _, tk := range append(batch, rest...) {
		tk.Finish(&inference.Response{ID: tk.Req.ID}, nil)
	}
	for _, o := range outs {
		if r := <-o; r.err != nil {
			t.Fatal(r.err)
		}
	}
}

func TestDynamicBatchingWaitsForMoreWithinDelay(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{MaxBatchSize: 2, Dynamic: true, MaxDelay: testTimeout}, &Stats{})
	q.SetRoutable(1)
	submit(ctx, q, "a", 1)
	waitLen(t, q, 1)
	got := make(chan []*Task, 1)
	go func() {
		b, _ := q.Next(ctx, nil)
		got <- b
	}()
	waitLen(t, q, 0)
	submit(ctx, q, "b", 1)
	select {
	case b := <-got:
		if len(b) != 2 {
			t.Fatalf("batch of %d, want 2", len(b))
		}
		for _, tk := range b {
			tk.Finish(nil, nil)
		}
	case <-ctx.Done():
		t.Fatal("no batch")
	}
}

func TestCancelledRequestsAreSkipped(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	cctx, cancel := context.WithCancel(ctx)
	gone := submit(cctx, q, "gone", 1)
	waitLen(t, q, 1)
	cancel()
	if o := <-gone; !errors.Is(o.err, context.Canceled) {
		t.Fatalf("err %v, want canceled", o.err)
	}
	kept := submit(ctx, q, "kept", 1)
	waitLen(t, q, 2)
	batch, err := q.Next(ctx, nil)
	if err != nil || batch[0].Req.ID != "kept" {
		t.Fatalf("batch %v err %v, want the live request", batch, err)
	}
	batch[0].Finish(&inference.Response{}, nil)
	<-kept
}

func TestDeadlineWhileQueuedIsDeadlineExceeded(t *testing.T) {
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := q.Submit(ctx, &inference.Request{}, 1)
	if apierr.CodeOf(err) != apierr.DeadlineExceeded {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
}

func TestQueueLimit(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{MaxQueue: 1}, &Stats{})
	q.SetRoutable(1)
	first := submit(ctx, q, "a", 1)
	waitLen(t, q, 1)
	_, err := q.Submit(ctx, &inference.Request{}, 1)
	if apierr.CodeOf(err) != apierr.ResourceExhausted || apierr.RetryAfter(err) == 0 {
		t.Fatalf("err %v, want resource exhausted with Retry-After", err)
	}
	q.Close(errors.New("closed"))
	<-first
}

func TestCloseFailsWaitingAndNewRequests(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	waiting := submit(ctx, q, "a", 1)
	waitLen(t, q, 1)
	closed := apierr.Unavailablef("unloading")
	q.Close(closed)
	if o := <-waiting; !errors.Is(o.err, closed) {
		t.Fatalf("err %v", o.err)
	}
	if _, err := q.Submit(ctx, &inference.Request{}, 1); !errors.Is(err, closed) {
		t.Fatalf("err %v", err)
	}
	if _, err := q.Next(ctx, nil); !errors.Is(err, closed) {
		t.Fatalf("next err %v", err)
	}
}

func TestDynamicBatchingDoesNotWaitWhileAnotherWorkerIsIdle(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{MaxBatchSize: 4, Dynamic: true, MaxDelay: time.Hour}, &Stats{})
	q.SetRoutable(2)
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	batches := make(chan []*Task, 2)
	for i := 0; i < 2; i++ {
		go func() {
			if b, err := q.Next(wctx, nil); err == nil {
				batches <- b
			}
		}()
	}
	deadline := time.Now().Add(testTimeout)
	for {
		q.mu.Lock()
		n := len(q.idle)
		q.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers, want 2", n)
		}
		time.Sleep(time.Millisecond)
	}
	// One worker takes the request; the other is idle and would serve the
	// next one at once, so the batch must not wait an hour for company.
	done := submit(ctx, q, "a", 1)
	select {
	case b := <-batches:
		b[0].Finish(&inference.Response{}, nil)
	case <-ctx.Done():
		t.Fatal("batch held back although another worker was idle")
	}
	<-done
}

// directCtx is a request context without a deadline: requests with one
// are never run directly.
func directCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// idleWorker runs Next in a goroutine with run as its direct runner and
// waits until the worker is idle. Batches Next hands out arrive on the
// returned channel.
// blockingIdleWorker is an idleWorker whose direct run closes started, then
// waits for release before it answers the request.
func blockingIdleWorker(t *testing.T, ctx context.Context, q *Queue) (started, release chan struct{}, batches <-chan []*Task) {
	t.Helper()
	started, release = make(chan struct{}), make(chan struct{})
	batches = idleWorker(t, ctx, q, func(b []*Task) {
		close(started)
		<-release
		b[0].Finish(&inference.Response{}, nil)
	})
	return started, release, batches
}

func idleWorker(t *testing.T, ctx context.Context, q *Queue, run func([]*Task)) <-chan []*Task {
	t.Helper()
	q.mu.Lock()
	before := len(q.idle)
	q.mu.Unlock()
	batches := make(chan []*Task, 1)
	go func() {
		b, err := q.Next(ctx, run)
		if err != nil {
			close(batches)
			return
		}
		batches <- b
	}()
	deadline := time.Now().Add(testTimeout)
	for {
		q.mu.Lock()
		n := len(q.idle)
		q.mu.Unlock()
		if n > before {
			return batches
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not idle")
		}
		time.Sleep(time.Millisecond)
	}
}

// serveBatch takes the next batch Next hands out, checks that it is the
// one request id, and finishes it.
func serveBatch(t *testing.T, batches <-chan []*Task, id string) {
	t.Helper()
	b := <-batches
	if len(b) != 1 || b[0].Req.ID != id {
		t.Fatalf("Next handed out %v, want %s", b, id)
	}
	b[0].Finish(&inference.Response{}, nil)
}

// succeeded waits for a submitted request and fails the test on its error.
func succeeded(t *testing.T, done <-chan outcome) {
	t.Helper()
	if o := <-done; o.err != nil {
		t.Fatal(o.err)
	}
}

func TestSubmitRunsDirectlyOnAnIdleWorker(t *testing.T) {
	ctx := testCtx(t)
	stats := &Stats{}
	q := NewQueue("m", Batching{}, stats)
	q.SetRoutable(1)
	var ran []string
	batches := idleWorker(t, ctx, q, func(b []*Task) {
		for _, task := range b {
			ran = append(ran, task.Req.ID)
			task.Finish(&inference.Response{ID: task.Req.ID}, nil)
		}
	})
	for _, id := range []string{"a", "b"} {
		resp, err := q.Submit(directCtx(t), &inference.Request{ID: id}, 1)
		if err != nil || resp.ID != id {
			t.Fatalf("Submit %s = %v, %v", id, resp, err)
		}
	}
	if len(ran) != 2 {
		t.Fatalf("direct runs %v, want a and b", ran)
	}
	select {
	case b := <-batches:
		t.Fatalf("Next handed out %d tasks; the requests should have run directly", len(b))
	default:
	}
	q.mu.Lock()
	idle := len(q.idle)
	q.mu.Unlock()
	if idle != 1 {
		t.Fatalf("%d idle workers after direct runs, want 1", idle)
	}
	if c := stats.Snapshot(); c.Success.Count != 2 || c.ComputeInfer.Count != 2 {
		t.Fatalf("stats %+v", c)
	}
}

func TestRequestQueuedDuringADirectRunGoesToThatWorkerAfterwards(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	started, release, batches := blockingIdleWorker(t, ctx, q)
	first := submit(directCtx(t), q, "a", 1)
	<-started
	second := submit(directCtx(t), q, "b", 1)
	waitLen(t, q, 1) // the only worker is claimed: b queues
	close(release)
	succeeded(t, first)
	serveBatch(t, batches, "b")
	succeeded(t, second)
}

func TestNextDoesNotReturnDuringADirectRun(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	wctx, stopWorker := context.WithCancel(ctx)
	started, release, batches := blockingIdleWorker(t, wctx, q)
	q.mu.Lock()
	w := q.idle[0]
	q.mu.Unlock()
	done := submit(directCtx(t), q, "a", 1)
	<-started
	stopWorker()
	// Next has seen its context end once it marks itself leaving; the
	// instance is still executing a, so Next must not have returned (to
	// let its worker move on to a restarted process, say).
	deadline := time.Now().Add(testTimeout)
	for {
		q.mu.Lock()
		leaving := w.leaving
		q.mu.Unlock()
		if leaving {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Next did not notice its context ending")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-batches:
		t.Fatal("Next returned while a direct run was in progress")
	default:
	}
	close(release)
	if _, ok := <-batches; ok {
		t.Fatal("Next handed out a batch after its context ended")
	}
	succeeded(t, done)
}

func TestRequestsThatMustWaitAreQueuedNotRunDirectly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		batching Batching
		ctx      func(context.Context) (context.Context, context.CancelFunc)
	}{
		{"deadline", Batching{}, func(c context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(c, time.Hour)
		}},
		{"one idle worker gathering a dynamic batch", Batching{MaxBatchSize: 4, Dynamic: true, MaxDelay: time.Millisecond},
			func(c context.Context) (context.Context, context.CancelFunc) { return context.WithCancel(c) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			q := NewQueue("m", tc.batching, &Stats{})
			q.SetRoutable(1)
			batches := idleWorker(t, ctx, q, func([]*Task) { t.Error("request ran directly") })
			rctx, cancel := tc.ctx(directCtx(t))
			defer cancel()
			done := submit(rctx, q, "a", 1)
			serveBatch(t, batches, "a")
			succeeded(t, done)
		})
	}
}

func TestQueuedRequestWakesOneIdleWorker(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(2)
	first := idleWorker(t, ctx, q, nil)
	second := idleWorker(t, ctx, q, nil)
	done := submit(ctx, q, "a", 1) // no direct runner: queued
	var b []*Task
	var other <-chan []*Task
	select {
	case b = <-first:
		other = second
	case b = <-second:
		other = first
	}
	b[0].Finish(&inference.Response{}, nil)
	<-done
	select {
	case <-other:
		t.Fatal("the second worker was woken and handed a batch")
	default:
	}
	q.mu.Lock()
	idle := len(q.idle)
	q.mu.Unlock()
	if idle != 1 {
		t.Fatalf("%d idle workers, want the one that was not woken", idle)
	}
}

func TestCancelledRequestIsNotRunDirectly(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	idleWorker(t, ctx, q, func([]*Task) { t.Error("a cancelled request ran") })
	rctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Submit(rctx, &inference.Request{ID: "a"}, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestWakeUpOfALeavingWorkerGoesToAnother(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(2)
	other := idleWorker(t, ctx, q, nil)
	wctx, endSession := context.WithCancel(ctx)
	leaving := idleWorker(t, wctx, q, nil)
	// A request queues and wakes the most recently idle worker just as
	// that worker's session ends: the other idle worker must take it.
	task := newTask(ctx, &inference.Request{ID: "a"}, 1, false)
	q.mu.Lock()
	endSession()
	q.tasks = append(q.tasks, task)
	q.dispatchLocked()
	q.mu.Unlock()
	if _, ok := <-leaving; ok {
		t.Fatal("Next handed out a batch after its context ended")
	}
	select {
	case b := <-other:
		if len(b) != 1 || b[0] != task {
			t.Fatalf("Next handed out %v", b)
		}
	case <-ctx.Done():
		t.Fatal("the request stayed queued next to an idle worker")
	}
}

func TestCloseDuringADirectRunReleasesTheWorkerAfterIt(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	started, release, batches := blockingIdleWorker(t, ctx, q)
	done := submit(directCtx(t), q, "a", 1)
	<-started
	q.Close(errors.New("closed"))
	close(release)
	if o := <-done; o.err != nil {
		t.Fatal(o.err)
	}
	select {
	case _, ok := <-batches:
		if ok {
			t.Fatal("Next handed out a batch from a closed queue")
		}
	case <-ctx.Done():
		t.Fatal("Next did not return after the queue closed")
	}
}
