package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

func TestSubmitIdleFailsAtOnceWithoutAFreeWorker(t *testing.T) {
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1) // routable, but its worker is busy (not in Next)
	start := time.Now()
	_, err := q.SubmitIdle(testCtx(t), &inference.Request{ID: "a"}, 1)
	if !errors.Is(err, ErrNoIdleInstance) || apierr.CodeOf(err) != apierr.Unavailable {
		t.Fatalf("err = %v, want an Unavailable ErrNoIdleInstance", err)
	}
	if q.Len() != 0 {
		t.Errorf("the refused request was queued")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("SubmitIdle took %v to refuse", d)
	}
}

func TestSubmitIdleRunsDirectlyDespiteDynamicBatching(t *testing.T) {
	ctx := testCtx(t)
	// A lone idle worker would hold a plain Submit back to gather a batch.
	q := NewQueue("m", Batching{MaxBatchSize: 8, Dynamic: true, MaxDelay: time.Hour}, &Stats{})
	q.SetRoutable(1)
	ran := 0
	idleWorker(t, ctx, q, func(b []*Task) {
		ran += len(b)
		b[0].Finish(&inference.Response{ID: b[0].Req.ID}, nil)
	})
	resp, err := q.SubmitIdle(directCtx(t), &inference.Request{ID: "a"}, 1)
	if err != nil || resp.ID != "a" || ran != 1 {
		t.Fatalf("SubmitIdle = %v, %v after %d direct runs; want a direct run of a", resp, err, ran)
	}
}

func TestSubmitIdleWithDeadlineWakesTheIdleWorker(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{}, &Stats{})
	q.SetRoutable(1)
	batches := idleWorker(t, ctx, q, nil)
	done := make(chan error, 1)
	go func() {
		dctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_, err := q.SubmitIdle(dctx, &inference.Request{ID: "d"}, 1)
		done <- err
	}()
	serveBatch(t, batches, "d")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
