package sharedmemory

import (
	"context"
	"maps"
	"sync"
	"unsafe"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// The tensor parameters that place an input or a requested output in a
// region.
const (
	ParamRegion   = "shared_memory_region"
	ParamByteSize = "shared_memory_byte_size"
	ParamOffset   = "shared_memory_offset"
)

// InferFunc runs one inference request.
type InferFunc func(ctx context.Context, req *inference.Request) (*inference.Response, error)

// InSharedMemory reports whether a tensor's parameters place it in a
// region. Front ends use it on inputs (which then carry no data) and on
// response outputs (whose data went to the region, so the response carries
// none).
func InSharedMemory(params map[string]any) bool {
	_, ok := params[ParamRegion]
	return ok
}

// ref is a parsed region reference of one tensor.
type ref struct {
	region       string
	offset, size uint64
}

// parseRef reads the shared memory parameters of tensor name with Triton's
// rules and messages. ok is false when the tensor names no region.
func parseRef(name string, p map[string]any) (r ref, ok bool, err error) {
	rv, hasRegion := p[ParamRegion]
	_, hasSize := p[ParamByteSize]
	_, hasOffset := p[ParamOffset]
	if !hasRegion {
		switch {
		case hasOffset:
			return r, false, apierr.New(apierr.InvalidArgument, "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for tensor '%s'", name)
		case hasSize:
			return r, false, apierr.New(apierr.InvalidArgument, "'shared_memory_byte_size' can not be specified without 'shared_memory_region' parameter for tensor '%s'", name)
		}
		return r, false, nil
	}
	s, isString := rv.(string)
	if !isString {
		return r, false, apierr.New(apierr.InvalidArgument, "invalid value type for 'shared_memory_region' parameter for tensor '%s', expected string_param.", name)
	}
	r.region = s
	if !hasSize {
		return r, false, apierr.New(apierr.InvalidArgument, "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor '%s'", name)
	}
	if r.size, err = unsignedParam(name, ParamByteSize, p[ParamByteSize]); err != nil {
		return r, false, err
	}
	if hasOffset {
		if r.offset, err = unsignedParam(name, ParamOffset, p[ParamOffset]); err != nil {
			return r, false, err
		}
	}
	return r, true, nil
}

func unsignedParam(tensorName, key string, v any) (uint64, error) {
	switch x := v.(type) {
	case int64:
		if x >= 0 {
			return uint64(x), nil
		}
		return 0, apierr.New(apierr.InvalidArgument, "'%s' parameter for tensor '%s' must not be negative, got %d", key, tensorName, x)
	case uint64:
		return x, nil
	}
	return 0, apierr.New(apierr.InvalidArgument, "invalid value type for '%s' parameter for tensor '%s', expected int64_param.", key, tensorName)
}

// withoutRef returns p without the shared memory keys, nil when nothing is
// left.
func withoutRef(p map[string]any) map[string]any {
	out := maps.Clone(p)
	delete(out, ParamRegion)
	delete(out, ParamByteSize)
	delete(out, ParamOffset)
	if len(out) == 0 {
		return nil
	}
	return out
}

// Infer runs req through next with its shared memory resolved: inputs that
// name a region get that region's bytes as their data, and requested
// outputs that name one have their data written there; such outputs come
// back with no data and with the request's shared memory parameters, which
// the front ends read with InSharedMemory. Every region a request uses is
// leased for the whole request, so an unregister in the meantime waits.
// Requests that name no region go to next untouched.
//
// Inputs of at least ShareThreshold bytes (not BYTES) are not copied: their
// Data is the server's mapping of the region, and their tensor.Shared lets
// a model stub map the region itself; requested outputs with at least as
// much room get a Dest that lets the stub write them there. Whoever hands a
// region's descriptor to a stub takes a Hold, which keeps every lease of
// the request until the stub's reply is in, also when the request itself
// ended first (its caller gave up). Smaller inputs, and BYTES ones (whose
// layout the server checks), are copied out of the region, faults caught.
func (r *Registry) Infer(ctx context.Context, req *inference.Request, next InferFunc) (*inference.Response, error) {
	if !usesSharedMemory(req) {
		return next(ctx, req)
	}
	b, err := r.bind(req)
	defer b.release()
	if err != nil {
		return nil, err
	}
	resp, err := next(ctx, b.req)
	if err != nil {
		return nil, err
	}
	if err := b.writeOutputs(resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Bind prepares a request for a caller that runs it itself (a stream):
// it is Infer's first half. When the request names no region it returns
// nil and no error; otherwise run Binding.Request, pass each response
// through Binding.WriteOutputs, and Release the binding when the request
// has ended (also after an error).
func (r *Registry) Bind(req *inference.Request) (*Binding, error) {
	if !usesSharedMemory(req) {
		return nil, nil
	}
	return r.bind(req)
}

// Request is the request to run: inputs filled from their regions, no
// shared memory parameters left.
func (b *Binding) Request() *inference.Request { return b.req }

// WriteOutputs writes resp's outputs that the request placed in regions;
// see Infer.
func (b *Binding) WriteOutputs(resp *inference.Response) error { return b.writeOutputs(resp) }

// Release ends the binding's leases. It is idempotent and nil-safe.
func (b *Binding) Release() {
	if b != nil {
		b.release()
	}
}

func usesSharedMemory(req *inference.Request) bool {
	for i := range req.Inputs {
		if hasAnyRefKey(req.Inputs[i].Parameters) {
			return true
		}
	}
	for i := range req.Outputs {
		if hasAnyRefKey(req.Outputs[i].Parameters) {
			return true
		}
	}
	return false
}

// ShareThreshold is the size from which a region's tensor reaches a model
// stub as the region's descriptor rather than as a copy: below it, copying
// costs less than the stub's mapping (the same size from which the stub
// protocol sends tensors out of band, ipc.DefaultShmThreshold).
const ShareThreshold = 256 << 10

// Binding is a request with its regions leased and its inputs read.
type Binding struct {
	req       *inference.Request
	leases    []*Lease
	outs      map[string]*Lease
	outParams map[string]map[string]any
	// shared are the leases whose bytes inputs alias (Data not copied).
	shared []*Lease

	mu sync.Mutex
	// refs counts the binding's own hold (until Release) and every Hold
	// not yet released; the leases end with the last.
	refs     int
	released bool
}

// hold is tensor.Shared.Hold: the leases stay until the returned function
// is called.
func (b *Binding) hold() func() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refs == 0 {
		return func() {} // over already; nothing handed out may use it
	}
	b.refs++
	var once sync.Once
	return func() { once.Do(b.unref) }
}

func (b *Binding) unref() {
	b.mu.Lock()
	b.refs--
	last := b.refs == 0
	b.mu.Unlock()
	if last {
		for _, l := range b.leases {
			l.Release()
		}
	}
}

// lease acquires the region a tensor's parameters name, if they name one,
// and keeps the lease for the binding's release. A nil lease means the
// tensor is not in shared memory.
func (b *Binding) lease(r *Registry, name string, params map[string]any) (*Lease, string, error) {
	ref, ok, err := parseRef(name, params)
	if err != nil || !ok {
		return nil, "", err
	}
	l, err := r.Acquire(ref.region, ref.offset, ref.size)
	if err != nil {
		return nil, "", err
	}
	b.leases = append(b.leases, l)
	return l, ref.region, nil
}

// bind leases every region req names, copies the shared memory inputs into
// a copy of req and strips the shared memory parameters from it. The
// binding must be released, even when bind fails.
func (r *Registry) bind(req *inference.Request) (*Binding, error) {
	b := &Binding{outs: map[string]*Lease{}, outParams: map[string]map[string]any{}, refs: 1}
	r2 := *req
	r2.Inputs = make([]tensor.Tensor, len(req.Inputs))
	for i, t := range req.Inputs {
		l, region, err := b.lease(r, t.Name, t.Parameters)
		if err != nil {
			return b, err
		}
		if l != nil {
			if t.Datatype != tensor.Bytes && l.Len() >= ShareThreshold {
				t.Data, t.Shared = l.data, l.share(false, b.hold)
				b.shared = append(b.shared, l)
			} else if t.Data, err = l.Read(); err != nil {
				return b, err
			}
			t.Parameters = withoutRef(t.Parameters)
			if err := t.Validate(); err != nil {
				return b, apierr.Wrap(apierr.InvalidArgument, err,
					"model %s: input '%s' in shared memory region '%s' does not match its shape and datatype", req.Model, t.Name, region)
			}
		}
		r2.Inputs[i] = t
	}
	if len(req.Outputs) > 0 {
		r2.Outputs = make([]inference.RequestedOutput, len(req.Outputs))
	}
	for i, o := range req.Outputs {
		l, _, err := b.lease(r, o.Name, o.Parameters)
		if err != nil {
			return b, err
		}
		if l != nil {
			b.outs[o.Name] = l
			b.outParams[o.Name] = o.Parameters
			o.Parameters = withoutRef(o.Parameters)
			if l.Len() >= ShareThreshold {
				o.Dest = l.share(true, b.hold)
			}
		}
		r2.Outputs[i] = o
	}
	b.req = &r2
	return b, nil
}

// writeOutputs writes resp's outputs that the request placed in regions
// and marks them (no data; the shared memory parameters, with
// shared_memory_byte_size the bytes written).
func (b *Binding) writeOutputs(resp *inference.Response) error {
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		l, ok := b.outs[t.Name]
		if !ok {
			if err := b.detach(t); err != nil {
				return err
			}
			continue
		}
		if len(t.Data) > l.Len() {
			return apierr.New(apierr.Internal,
				"shared memory size specified with the request for output '%s' (%d bytes) should be at least %d bytes to hold the results",
				t.Name, l.Len(), len(t.Data))
		}
		// A stub that had the region's descriptor wrote the output there
		// itself: its Data is the leased bytes.
		if len(t.Data) == 0 || unsafe.SliceData(t.Data) != unsafe.SliceData(l.data) {
			if err := l.Write(t.Data); err != nil {
				return err
			}
		}
		p := maps.Clone(t.Parameters)
		if p == nil {
			p = map[string]any{}
		}
		maps.Copy(p, b.outParams[t.Name])
		// The bytes the output really took, so that a client can tell.
		p[ParamByteSize] = int64(len(t.Data))
		t.Parameters = p
		t.Data = nil
	}
	return nil
}

// detach copies an output whose Data is a region's bytes that an input
// was given without a copy (a model, such as an ensemble, that passes an
// input through as an output), since the region may be unmapped once the
// request ends.
func (b *Binding) detach(t *tensor.Tensor) error {
	if len(t.Data) == 0 {
		return nil
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(t.Data)))
	for _, l := range b.shared {
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(l.data)))
		if p >= lo && p < lo+uintptr(len(l.data)) {
			src := t.Data
			out := make([]byte, len(src))
			if err := guard(l.reg.status.Name, func() { copy(out, src) }); err != nil {
				return err
			}
			t.Data = out
			return nil
		}
	}
	return nil
}

// release drops the binding's own hold; the leases end when the holds
// handed to stubs are released too.
func (b *Binding) release() {
	b.mu.Lock()
	done := b.released
	b.released = true
	b.mu.Unlock()
	if !done {
		b.unref()
	}
}

func hasAnyRefKey(p map[string]any) bool {
	if len(p) == 0 {
		return false
	}
	_, a := p[ParamRegion]
	_, b := p[ParamByteSize]
	_, c := p[ParamOffset]
	return a || b || c
}
