package scheduler

import (
	"sync"
	"time"
)

// Duration is a count and a total time.
type Duration struct {
	Count int64
	Total time.Duration
}

// Counters are one model version's statistics.
type Counters struct {
	LastInference  time.Time
	InferenceCount int64 // inferences, counting each batch element
	ExecutionCount int64 // executes (batches)
	Success        Duration
	Fail           Duration
	Queue          Duration
	ComputeInfer   Duration
}

// Stats accumulates one model version's statistics (Triton's statistics
// extension). The zero value is ready to use.
type Stats struct {
	mu sync.Mutex
	s  Counters
}

func (s *Stats) record(t *Task, r Result) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s.LastInference = now
	total := now.Sub(t.enqueued)
	if r.Err != nil {
		s.s.Fail.Count++
		s.s.Fail.Total += total
		return
	}
	s.s.InferenceCount += int64(t.size)
	s.s.Success.Count++
	s.s.Success.Total += total
	if !t.started.IsZero() {
		s.s.Queue.Count++
		s.s.Queue.Total += t.started.Sub(t.enqueued)
		s.s.ComputeInfer.Count++
		s.s.ComputeInfer.Total += now.Sub(t.started)
	}
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

// Snapshot returns a copy of the statistics.
func (s *Stats) Snapshot() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s
}
