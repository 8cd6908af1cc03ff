package scheduler

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
)

// TestPreferredBatchSizeCutsTheBatch: 5 queued requests of size 1 with
// preferred sizes 2 and 4 give a batch of 4 and then one of 1 (no prefix
// of 1 matches a preferred size, so the largest batch that fits goes).
func TestPreferredBatchSizeCutsTheBatch(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{MaxBatchSize: 8, Dynamic: true, Preferred: []int{2, 4}}, &Stats{})
	q.SetRoutable(1)
	var outs []<-chan outcome
	for i := range 5 {
		outs = append(outs, submit(ctx, q, string(rune('a'+i)), 1))
		waitLen(t, q, i+1)
	}
	first, err := q.Next(ctx, nil)
	if err != nil || len(first) != 4 {
		t.Fatalf("first batch %d requests (%v), want 4: the largest preferred size", len(first), err)
	}
	if first[0].Req.ID != "a" || first[3].Req.ID != "d" {
		t.Errorf("first batch starts %s ends %s, want the oldest four", first[0].Req.ID, first[3].Req.ID)
	}
	second, err := q.Next(ctx, nil)
	if err != nil || len(second) != 1 || second[0].Req.ID != "e" {
		t.Fatalf("second batch %v, %v; want the one left, still first in line", second, err)
	}
	for _, tk := range append(first, second...) {
		tk.Finish(&inference.Response{}, nil)
	}
	for _, o := range outs {
		<-o
	}
}

// TestPreferredBatchSizeStopsGathering: with a long queue delay, a worker
// holding a batch of the largest preferred size sends it at once instead
// of waiting for max_batch_size.
func TestPreferredBatchSizeStopsGathering(t *testing.T) {
	ctx := testCtx(t)
	q := NewQueue("m", Batching{MaxBatchSize: 8, Dynamic: true, MaxDelay: time.Hour, Preferred: []int{3}}, &Stats{})
	q.SetRoutable(1)
	for i := range 2 {
		submit(ctx, q, string(rune('a'+i)), 1)
		waitLen(t, q, i+1)
	}
	got := make(chan []*Task, 1)
	go func() {
		b, _ := q.Next(ctx, nil)
		got <- b
	}()
	waitLen(t, q, 0) // the worker holds both and waits for more
	submit(ctx, q, "c", 1)
	select {
	case b := <-got:
		if len(b) != 3 {
			t.Fatalf("batch of %d, want 3", len(b))
		}
		for _, tk := range b {
			tk.Finish(nil, nil)
		}
	case <-ctx.Done():
		t.Fatal("the batch of the preferred size was held back for the queue delay")
	}
}

func TestPreferredCut(t *testing.T) {
	tasks := func(sizes ...int) []*Task {
		var out []*Task
		for _, s := range sizes {
			out = append(out, &Task{size: s})
		}
		return out
	}
	b := Batching{Preferred: []int{4, 6}}
	for _, tc := range []struct {
		sizes []int
		want  int
	}{
		{[]int{1, 1, 1, 1, 1}, 4},
		{[]int{2, 2, 2, 1}, 3},
		{[]int{3, 3}, 2},
		{[]int{5, 1}, 2},
		{[]int{3, 2}, 0},
	} {
		if got := b.preferredCut(tasks(tc.sizes...)); got != tc.want {
			t.Errorf("preferredCut(%v) = %d, want %d", tc.sizes, got, tc.want)
		}
	}
}

// A ticket's Turn returns only once every earlier ticket's has: one that
// arrives first waits, and an earlier ticket's turn releases the waiting
// ones one after the other. Turn returning is the release; what its caller
// does afterwards runs concurrently with the next ticket's, so the test
// checks the Ordering's state between steps rather than the order in which
// goroutines go on after Turn.
func TestOrderingReleasesInArrivalOrder(t *testing.T) {
	ctx := testCtx(t)
	o := NewOrdering()
	for range 4 {
		o.Issue()
	}
	returned := map[uint64]chan error{}
	turn := func(tk uint64) {
		ch := make(chan error, 1)
		returned[tk] = ch
		go func() { ch <- o.Turn(ctx, tk) }()
	}
	wait := func(tk uint64) {
		t.Helper()
		select {
		case err := <-returned[tk]:
			if err != nil {
				t.Fatalf("ticket %d: %v", tk, err)
			}
		case <-time.After(testTimeout):
			t.Fatalf("ticket %d was not released", tk)
		}
	}
	// held reports the tickets waiting for their turn and whose turn it is.
	held := func() ([]uint64, uint64) {
		o.mu.Lock()
		defer o.mu.Unlock()
		var ws []uint64
		for tk := range o.waiting {
			ws = append(ws, tk)
		}
		slices.Sort(ws)
		return ws, o.next
	}
	waitHeld := func(want []uint64, next uint64) {
		t.Helper()
		deadline := time.Now().Add(testTimeout)
		for {
			ws, n := held()
			if slices.Equal(ws, want) && n == next {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting %v with ticket %d next; want %v with %d next", ws, n, want, next)
			}
			time.Sleep(time.Millisecond)
		}
	}

	// Tickets 3 and 1 finish first: both wait for ticket 0.
	turn(3)
	turn(1)
	waitHeld([]uint64{1, 3}, 0)
	// Ticket 0's turn releases ticket 1; ticket 3 still waits for 2.
	if err := o.Turn(ctx, 0); err != nil {
		t.Fatal(err)
	}
	wait(1)
	waitHeld([]uint64{3}, 2)
	// Ticket 2's turn comes at once and releases ticket 3.
	if err := o.Turn(ctx, 2); err != nil {
		t.Fatal(err)
	}
	wait(3)
	waitHeld(nil, 4)
}

func TestOrderingSkipsAbandonedTickets(t *testing.T) {
	o := NewOrdering()
	first, second := o.Issue(), o.Issue()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := o.Turn(gone, second); !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned turn: %v", err)
	}
	third := o.Issue()
	if err := o.Turn(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	// The abandoned second does not hold up the third.
	if err := o.Turn(testCtx(t), third); err != nil {
		t.Fatal(err)
	}
	var none *Ordering
	if none.Issue() != 0 || none.Turn(context.Background(), 0) != nil {
		t.Fatal("a nil Ordering must do nothing")
	}
}
