package model

import (
	"time"

	"github.com/vigilhq/vigil/internal/scheduler"
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

// The statistics' types are the scheduler's, which counts them.
type (
	// Duration is a count and a total time, as in Triton's statistics.
	Duration = scheduler.Duration
	// Counters are a version's cumulative statistics.
	Counters = scheduler.Counters
	// BatchStats are the executions of one batch size.
	BatchStats = scheduler.BatchCounters
)

// Stats are one model version's inference statistics (Triton's statistics
// extension).
type Stats struct {
	Name    string
	Version string
	Counters
	// Pending is the number of requests waiting in the queue now.
	Pending int
	// LoadDuration is how long the load that made the version serve took:
	// from the start of the load (configuration read, auto-complete
	// included) until every instance had initialized and warmed up.
	LoadDuration time.Duration
}
