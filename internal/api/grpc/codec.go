package grpc

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/rawcontents"
)

// tensorCodec is the server's protobuf codec, made for large tensors: the
// raw_input_contents of a ModelInferRequest alias the received message
// instead of being copied out of it by proto.Unmarshal, and the
// raw_output_contents of a ModelInferResponse are handed to the transport
// as they are instead of being copied into one marshalled buffer (package
// rawcontents). Every other message, and the rest of these two, go through
// the protobuf library.
type tensorCodec struct {
	fallback encoding.CodecV2
	// files, when set, receives large ModelInferRequests (files.go).
	files *memfile.Pool
	// requests and responses hold the memory file of a message in
	// flight (files.go).
	requests  fileTable[pb.ModelInferRequest]
	responses fileTable[pb.ModelInferResponse]
}

func newTensorCodec(files *memfile.Pool) *tensorCodec {
	return &tensorCodec{fallback: encoding.GetCodecV2("proto"), files: files}
}

// Name is the content subtype the codec serves: protobuf's.
func (c *tensorCodec) Name() string { return "proto" }

// fieldInferResponse is ModelStreamInferResponse.infer_response's number
// in grpc_service.proto.
const fieldInferResponse = 2

func (c *tensorCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *pb.ModelInferResponse:
		return c.marshalWithFile(m)
	case *pb.ModelStreamInferResponse:
		return c.marshalStreamResponse(m)
	}
	return c.fallback.Marshal(v)
}

// marshalWithFile is Marshal of a ModelInferResponse with the memory file
// handed on with it (passResponseFile), if any.
func (c *tensorCodec) marshalWithFile(m *pb.ModelInferResponse) (mem.BufferSlice, error) {
	if file := c.responses.take(m); file != nil {
		// The owner's reference goes here; outputs in the file hold it
		// until the transport has written them.
		defer file.Release()
		return c.marshalInferResponse(m, file)
	}
	return c.marshalInferResponse(m, nil)
}

// marshalStreamResponse is Marshal of a ModelStreamInferResponse: its
// infer_response is marshalled as a ModelInferResponse of its own, large
// raw outputs uncopied, after the rest of the message.
func (c *tensorCodec) marshalStreamResponse(m *pb.ModelStreamInferResponse) (mem.BufferSlice, error) {
	inner := m.GetInferResponse()
	if rawcontents.Len(inner.GetRawOutputContents()) < rawcontents.MinUncopied {
		if file := c.responses.take(inner); file != nil {
			defer file.Release() // after the copy below
		}
		return c.fallback.Marshal(m)
	}
	body, err := c.marshalWithFile(inner)
	if err != nil {
		return nil, err
	}
	m.InferResponse = nil
	head, err := proto.MarshalOptions{}.Marshal(m)
	m.InferResponse = inner
	if err != nil {
		body.Free()
		return nil, err
	}
	head = protowire.AppendTag(head, fieldInferResponse, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(body.Len()))
	return append(mem.BufferSlice{mem.SliceBuffer(head)}, body...), nil
}

// marshalInferResponse is Marshal of a ModelInferResponse; outputs in file
// (nil: none) hold it until the transport frees them.
func (c *tensorCodec) marshalInferResponse(m *pb.ModelInferResponse, file *memfile.File) (mem.BufferSlice, error) {
	if rawcontents.Len(m.RawOutputContents) < rawcontents.MinUncopied {
		return c.fallback.Marshal(m)
	}
	raw := m.RawOutputContents
	m.RawOutputContents = nil
	head, err := proto.MarshalOptions{}.Marshal(m)
	m.RawOutputContents = raw
	if err != nil {
		return nil, err
	}
	return rawcontents.Join(head, rawcontents.OutputField, raw,
		func(r []byte) mem.Buffer { return outputBuffer(r, file) }), nil
}

func (c *tensorCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*pb.ModelInferRequest)
	if !ok || data.Len() < rawcontents.MinUncopied {
		return c.fallback.Unmarshal(data, v)
	}
	if f := c.fileFor(data); f != nil {
		buf := f.Bytes()[:data.Len()]
		data.CopyTo(buf)
		if err := unmarshalInferRequest(buf, m); err != nil {
			f.Release()
			return err
		}
		c.requests.put(m, f, (*memfile.File).ReleaseWhenUnused) // no handler took it
		return nil
	}
	// One contiguous copy of the message, which the raw contents then
	// alias (grpc-go frees data after Unmarshal returns; this copy is the
	// request's own).
	return unmarshalInferRequest(data.Materialize(), m)
}

// unmarshalInferRequest decodes buf into m, the raw contents aliasing buf.
func unmarshalInferRequest(buf []byte, m *pb.ModelInferRequest) error {
	rest, raw, err := rawcontents.Split(buf, rawcontents.InputField)
	if err != nil {
		return fmt.Errorf("ModelInferRequest: %w", err)
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	m.RawInputContents = raw
	return nil
}
