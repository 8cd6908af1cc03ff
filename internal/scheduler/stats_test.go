package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestStatsFailReasonsAndPhases(t *testing.T) {
	var s Stats
	now := time.Now()
	started := &Task{size: 2, enqueued: now.Add(-3 * time.Millisecond), started: now.Add(-2 * time.Millisecond),
		timing: Timing{Input: time.Millisecond, Infer: 5 * time.Millisecond, Output: 2 * time.Millisecond}}
	s.record(started, Result{})
	s.record(started, Result{Err: errors.New("model raised")})
	s.recordEnded(&Task{size: 1, enqueued: now}, context.DeadlineExceeded, false)
	s.recordEnded(&Task{size: 1, enqueued: now}, context.Canceled, true)
	s.reject()
	s.RecordBatch(2, Timing{Input: time.Millisecond, Infer: 5 * time.Millisecond, Output: 2 * time.Millisecond})
	s.RecordBatch(2, Timing{Input: time.Millisecond})

	c := s.Snapshot()
	want := map[string]int64{ReasonBackend: 1, ReasonRejected: 2, ReasonCanceled: 1}
	for r, n := range want {
		if c.FailReasons[r] != n {
			t.Errorf("FailReasons[%s] = %d, want %d (all: %v)", r, c.FailReasons[r], n, c.FailReasons)
		}
	}
	if c.Fail.Count != 4 || c.Success.Count != 1 || c.InferenceCount != 2 {
		t.Errorf("fail %d success %d inferences %d", c.Fail.Count, c.Success.Count, c.InferenceCount)
	}
	if c.ComputeInput.Total != time.Millisecond || c.ComputeInfer.Total != 5*time.Millisecond || c.ComputeOutput.Total != 2*time.Millisecond {
		t.Errorf("phases = %v %v %v", c.ComputeInput, c.ComputeInfer, c.ComputeOutput)
	}
	if len(c.Batches) != 1 {
		t.Fatalf("batches = %+v, want one batch size", c.Batches)
	}
	if b := c.Batches[0]; b.Size != 2 || b.ComputeInput.Count != 2 || b.ComputeInfer.Total != 5*time.Millisecond {
		t.Errorf("batches = %+v", c.Batches)
	}
	c.FailReasons[ReasonOther] = 99
	if s.Snapshot().FailReasons[ReasonOther] != 0 {
		t.Error("Snapshot shares its map with the live statistics")
	}
}
