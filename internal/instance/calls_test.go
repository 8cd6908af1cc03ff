package instance

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// batchOf queues reqs, each under its own context, and takes them as one
// batch.
func batchOf(t *testing.T, reqs ...*inference.Request) ([]*scheduler.Task, []context.CancelFunc) {
	t.Helper()
	q := scheduler.NewQueue("m", scheduler.Batching{MaxBatchSize: len(reqs), Dynamic: true}, &scheduler.Stats{})
	q.SetRoutable(1)
	var cancels []context.CancelFunc
	for _, r := range reqs {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		cancels = append(cancels, cancel)
		go func() { _, _ = q.Submit(ctx, r, 1) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() < len(reqs) {
		if time.Now().After(deadline) {
			t.Fatal("requests not queued")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	batch, err := q.Next(ctx, nil)
	if err != nil || len(batch) != len(reqs) {
		t.Fatalf("Next = %d tasks, %v", len(batch), err)
	}
	return batch, cancels
}

func TestScopeChainIsTheUnionOfTheBatchsCallers(t *testing.T) {
	batch, _ := batchOf(t,
		&inference.Request{ID: "a", Callers: []string{"ens", "pre"}},
		&inference.Request{ID: "b", Callers: []string{"other", "pre"}})
	scope, release := scopeFor("bls", batch)
	defer release()
	// The batch's order is the order the requests were queued in, which
	// the test does not fix; the model itself comes last.
	got := slices.Clone(scope.chain)
	if len(got) == 0 || got[len(got)-1] != "bls" {
		t.Fatalf("chain = %v, want the model bls last", got)
	}
	slices.Sort(got)
	if want := []string{"bls", "ens", "other", "pre"}; !reflect.DeepEqual(got, want) {
		t.Errorf("chain = %v, want each of %v once", scope.chain, want)
	}
}

func TestScopeEndsWhenEveryClientOfTheBatchHasGone(t *testing.T) {
	batch, cancels := batchOf(t, &inference.Request{ID: "a"}, &inference.Request{ID: "b"})
	scope, release := scopeFor("m", batch)
	defer release()
	cancels[0]()
	select {
	case <-scope.clients.Done():
		t.Fatal("the scope ended while a client of the batch remains")
	case <-time.After(20 * time.Millisecond):
	}
	cancels[1]()
	select {
	case <-scope.clients.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the scope did not end when the last client went")
	}
}
