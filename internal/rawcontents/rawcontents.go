// Package rawcontents encodes and decodes the raw tensor contents of the
// inference messages without copying them: ModelInferRequest's
// raw_input_contents and ModelInferResponse's raw_output_contents, which
// for a large tensor are nearly all of the message.
//
// proto.Marshal copies every bytes field into one buffer and
// proto.Unmarshal copies each out of the received one. Here a message is
// split into the encoding of its other fields, left to the protobuf
// library, and its raw contents: on decoding they alias the received
// bytes, on encoding a large one is handed to the transport as it is. The
// bytes on the wire are a valid encoding of the same message: the raw
// contents come last, and protobuf allows any field order.
//
// The server's gRPC codec decodes requests and encodes responses this way;
// the benchmark's client does the converse, so that a large-tensor figure
// measures the servers rather than the client's copies.
package rawcontents

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers in grpc_service.proto.
const (
	InputField  protowire.Number = 7 // ModelInferRequest.raw_input_contents
	OutputField protowire.Number = 6 // ModelInferResponse.raw_output_contents
)

// MinUncopied is the size from which Join hands a value to the transport
// uncopied; below it a copy costs less than a buffer of its own.
const MinUncopied = 64 << 10

// Split parses buf, the encoding of a message, into the encoding of its
// fields other than field (rest, a copy) and the values of field, a
// repeated bytes field, in order (raw, aliasing buf, each capped at its
// length so that an append cannot overwrite what follows it).
func Split(buf []byte, field protowire.Number) (rest []byte, raw [][]byte, err error) {
	rest = make([]byte, 0, 1024)
	for b := buf; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		if num == field && typ == protowire.BytesType {
			val, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, nil, fmt.Errorf("field %d: %w", field, protowire.ParseError(m))
			}
			raw = append(raw, val[:len(val):len(val)])
			b = b[n+m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(m))
		}
		rest = append(rest, b[:n+m]...)
		b = b[n+m:]
	}
	return rest, raw, nil
}

// Join returns the encoding of a message whose other fields are encoded in
// head (which Join may append to) and whose repeated bytes field holds
// raw. A value of MinUncopied bytes or more is not copied: buffer(r) goes
// into the slice in its place (mem.SliceBuffer when buffer is nil);
// smaller ones are copied after their tags.
func Join(head []byte, field protowire.Number, raw [][]byte, buffer func([]byte) mem.Buffer) mem.BufferSlice {
	if buffer == nil {
		buffer = func(r []byte) mem.Buffer { return mem.SliceBuffer(r) }
	}
	out := make(mem.BufferSlice, 0, 1+2*len(raw))
	for _, r := range raw {
		head = protowire.AppendTag(head, field, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(len(r)))
		if len(r) < MinUncopied {
			head = append(head, r...)
			continue
		}
		out = append(out, mem.SliceBuffer(head), buffer(r))
		head = nil
	}
	if len(head) > 0 {
		out = append(out, mem.SliceBuffer(head))
	}
	return out
}

// Len returns the total length of raw's values.
func Len(raw [][]byte) int {
	n := 0
	for _, r := range raw {
		n += len(r)
	}
	return n
}
