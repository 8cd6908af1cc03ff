package grpc

import (
	"fmt"
	"sync"

	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

// sequenceOrder keeps the requests of one sequence on one stream in the
// order the client sent them. A stream runs its requests concurrently, so
// without it a sequence's second request could reach the sequence batcher
// before its first (and be refused for lacking START). Each request of a
// sequence runs once the one before it on the stream has finished; the
// batcher runs a sequence's requests one at a time anyway, so this costs
// no parallelism. Requests without a sequence_id are not held.
type sequenceOrder struct {
	mu   sync.Mutex
	tail map[string]chan struct{} // the last request of each sequence
}

// enter registers in, in receive order (call it from the receiving
// goroutine). It returns what to wait for before running in (nil: nothing)
// and what to call once in has finished.
func (o *sequenceOrder) enter(in *pb.ModelInferRequest) (wait <-chan struct{}, done func()) {
	p, ok := in.GetParameters()[inference.ParamSequenceID]
	if !ok {
		return nil, func() {}
	}
	var id string
	switch v := p.GetParameterChoice().(type) {
	case *pb.InferParameter_Int64Param:
		if v.Int64Param == 0 {
			return nil, func() {}
		}
		id = fmt.Sprint("n", v.Int64Param)
	case *pb.InferParameter_StringParam:
		if v.StringParam == "" {
			return nil, func() {}
		}
		id = "s" + v.StringParam
	default:
		return nil, func() {} // invalid: its error needs no order
	}
	key := in.GetModelName() + "\x00" + in.GetModelVersion() + "\x00" + id
	mine := make(chan struct{})
	o.mu.Lock()
	if o.tail == nil {
		o.tail = map[string]chan struct{}{}
	}
	prev := o.tail[key]
	o.tail[key] = mine
	o.mu.Unlock()
	return prev, func() {
		o.mu.Lock()
		if o.tail[key] == mine {
			delete(o.tail, key)
		}
		o.mu.Unlock()
		close(mine)
	}
}
