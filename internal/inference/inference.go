// Package inference defines the protocol-neutral inference request and
// response that the REST and gRPC front ends translate to and from, and that
// the scheduler carries to model instances.
package inference

import "github.com/vigilhq/vigil/internal/tensor"

// Request is one inference request for one model.
type Request struct {
	Model string
	// Version is the requested version; empty means the server's choice
	// (the latest ready version).
	Version    string
	ID         string
	Parameters map[string]any
	Inputs     []tensor.Tensor
	// Outputs lists the requested outputs; empty means all of them.
	Outputs []RequestedOutput
	// Callers is the chain of models whose executes made this request
	// through BLS, outermost first, the direct caller last; empty for a
	// client's request. The cycle check reads it.
	Callers []string
	// Sequence is the request's correlation ID and START/END flags, taken
	// from the reserved parameters sequence_id, sequence_start and
	// sequence_end (which are not in Parameters).
	Sequence Sequence
	// OutputFiles says that the response's consumer takes large outputs in
	// memory files, as a BLS call's caller stub does: the model's stub may
	// answer with outputs that are tensor.Shared views of a sealed memory
	// file it made for the response, which the consumer passes on rather
	// than copies, calling the response's Release once done.
	OutputFiles bool
}

// RequestedOutput names one output the client asked for.
type RequestedOutput struct {
	Name       string
	Parameters map[string]any
	// Dest, when set, is the client's shared memory the output is to be
	// written into; a model stub may write it there itself (the bytes it
	// wrote come back as an output whose Data is Dest.Mem's start).
	Dest *tensor.Shared
}

// Response is the answer to one Request.
type Response struct {
	Model      string
	Version    string
	ID         string
	Parameters map[string]any
	Outputs    []tensor.Tensor
	// Release, when set, frees the memory the outputs' Shared views are of
	// (see Request.OutputFiles). Whoever consumes the response calls it once
	// no output is read any more, or drops the response: without a call the
	// memory goes once no output viewing it is reachable. Carried whenever
	// a response is rebuilt around the same outputs.
	Release func()
}

// Done calls r.Release, if any; it is nil-safe.
func (r *Response) Done() {
	if r != nil && r.Release != nil {
		r.Release()
	}
}
