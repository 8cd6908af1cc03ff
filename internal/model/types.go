package model

import (
	"time"

	"github.com/vigilhq/vigil/internal/tensor"
)

// TensorMetadata describes one input or output in model metadata.
type TensorMetadata struct {
	Name     string
	Datatype tensor.Datatype
	// Shape includes the batch dimension (-1) for batching models; -1 marks
	// a variable dimension.
	Shape []int64
}

// Metadata is a model's metadata as the protocol reports it.
type Metadata struct {
	Name     string
	Versions []string
	Platform string
	Inputs   []TensorMetadata
	Outputs  []TensorMetadata
}

// IndexEntry is one row of the repository index. State is the runtime truth
// from the health engine, never only the load outcome.
type IndexEntry struct {
	Name    string
	Version string
	State   string
	Reason  string
}

// Duration is a count and a total time, as in Triton's statistics.
type Duration struct {
	Count int64
	Total time.Duration
}

// Stats are one model version's inference statistics (Triton's statistics
// extension).
type Stats struct {
	Name           string
	Version        string
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
	// Batches are the executions per batch size, ascending (Triton's
	// batch_stats).
	Batches []BatchStats
	// Pending is the number of requests waiting in the queue now.
	Pending int
	// LoadDuration is how long the load that made the version serve took:
	// from the start of the load (configuration read, auto-complete
	// included) until every instance had initialized and warmed up.
	LoadDuration time.Duration
}

// BatchStats are the executions of one batch size.
type BatchStats struct {
	Size                                      int
	ComputeInput, ComputeInfer, ComputeOutput Duration
}
