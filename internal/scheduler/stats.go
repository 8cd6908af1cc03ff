package scheduler

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"
)

// Duration is a count and a total time.
type Duration struct {
	Count int64
	Total time.Duration
}

func (d *Duration) add(t time.Duration) {
	d.Count++
	d.Total += t
}

// Timing is how long one execute's compute phases took (Triton's
// compute_input, compute_infer and compute_output).
type Timing struct {
	Input, Infer, Output time.Duration
}

// The failure reasons of Triton's nv_inference_request_failure.
const (
	ReasonRejected = "REJECTED" // refused or dropped before reaching an instance: queue full, no routable instance, a deadline that passed in the queue
	ReasonCanceled = "CANCELED" // the client went away
	ReasonBackend  = "BACKEND"  // failed on its instance: the model raised, the stub died, execute timed out
	ReasonOther    = "OTHER"
)

// BatchCounters are the executions of one batch size (Triton's
// batch_stats).
type BatchCounters struct {
	Size                                      int
	ComputeInput, ComputeInfer, ComputeOutput Duration
}

// Counters are one model version's statistics.
type Counters struct {
	LastInference  time.Time
	InferenceCount int64 // inferences, counting each batch element
	ExecutionCount int64 // executes (batches)
	Success        Duration
	Fail           Duration
	Queue          Duration
	ComputeInput   Duration
	ComputeInfer   Duration
	ComputeOutput  Duration
	// FailReasons counts failures by Triton's reason (REJECTED, CANCELED,
	// BACKEND, OTHER).
	FailReasons map[string]int64
	// Batches are the executions per batch size, by ascending size
	// (Triton's batch_stats).
	Batches []BatchCounters
}

// Observation is one successful request's times.
type Observation struct {
	Total, Queue         time.Duration
	Input, Infer, Output time.Duration
}

// Observer receives every successful request's times (Triton's latency
// summaries and histogram). It must not block.
type Observer interface {
	Observe(Observation)
}

// Stats accumulates one model version's statistics (Triton's statistics
// extension). The zero value is ready to use.
type Stats struct {
	// Observer, when set before the version serves, also receives each
	// successful request's times.
	Observer Observer

	mu      sync.Mutex
	s       Counters // without Batches
	batches map[int]BatchCounters
}

// record counts a task whose result was delivered: the worker that ran it
// (if any) wrote its start and timing before delivering.
func (s *Stats) record(t *Task, r Result) {
	if obs, ok := s.recordLocked(t, r); ok && s.Observer != nil {
		s.Observer.Observe(obs)
	}
}

// recordEnded counts a task whose request ended (cancelled or past its
// deadline) while it was queued or running; started says which.
func (s *Stats) recordEnded(t *Task, err error, started bool) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s.LastInference = now
	s.s.Fail.add(now.Sub(t.enqueued))
	s.failLocked(failReason(err, started))
}

// recordLocked counts the task; ok reports a success that ran on an
// instance, with its times.
func (s *Stats) recordLocked(t *Task, r Result) (obs Observation, ok bool) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s.LastInference = now
	total := now.Sub(t.enqueued)
	if r.Err != nil {
		s.s.Fail.add(total)
		s.failLocked(failReason(r.Err, !t.started.IsZero()))
		return obs, false
	}
	s.s.InferenceCount += int64(t.size)
	s.s.Success.add(total)
	if t.started.IsZero() {
		return obs, false
	}
	queue := t.started.Sub(t.enqueued)
	s.s.Queue.add(queue)
	tm := t.timingOf()
	if tm == (Timing{}) {
		// No phases reported: the whole run counts as compute_infer.
		tm.Infer = now.Sub(t.started)
	}
	s.s.ComputeInput.add(tm.Input)
	s.s.ComputeInfer.add(tm.Infer)
	s.s.ComputeOutput.add(tm.Output)
	return Observation{Total: total, Queue: queue, Input: tm.Input, Infer: tm.Infer, Output: tm.Output}, true
}

func failReason(err error, started bool) string {
	switch {
	case errors.Is(err, context.Canceled):
		return ReasonCanceled
	case !started:
		return ReasonRejected
	}
	return ReasonBackend
}

func (s *Stats) failLocked(reason string) {
	if s.s.FailReasons == nil {
		s.s.FailReasons = map[string]int64{}
	}
	s.s.FailReasons[reason]++
}

// reject counts a request refused before it was queued.
func (s *Stats) reject() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s.LastInference = time.Now()
	s.s.Fail.add(0)
	s.failLocked(ReasonRejected)
}

// RecordRequest records a request served outside the queue (an ensemble's,
// whose steps queue on their own models): its whole time counts as compute.
func (s *Stats) RecordRequest(start time.Time, size int, err error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s.LastInference = now
	total := now.Sub(start)
	if err != nil {
		s.s.Fail.Count++
		s.s.Fail.Total += total
		return
	}
	s.s.InferenceCount += int64(size)
	s.s.Success.Count++
	s.s.Success.Total += total
	s.s.Queue.Count++
	s.s.ComputeInfer.Count++
	s.s.ComputeInfer.Total += total
}

// RecordExecution counts one execute of a batch.
func (s *Stats) RecordExecution() {
	s.mu.Lock()
	s.s.ExecutionCount++
	s.mu.Unlock()
}

// RecordBatch adds one execute of a batch of size to the batch statistics.
func (s *Stats) RecordBatch(size int, tm Timing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batches == nil {
		s.batches = map[int]BatchCounters{}
	}
	b := s.batches[size]
	b.Size = size
	b.ComputeInput.add(tm.Input)
	b.ComputeInfer.add(tm.Infer)
	b.ComputeOutput.add(tm.Output)
	s.batches[size] = b
}

// Snapshot returns a copy of the statistics.
func (s *Stats) Snapshot() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.s
	c.FailReasons = maps.Clone(s.s.FailReasons)
	c.Batches = slices.SortedFunc(maps.Values(s.batches), func(a, b BatchCounters) int { return a.Size - b.Size })
	return c
}
