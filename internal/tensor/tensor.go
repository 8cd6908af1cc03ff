// Package tensor defines the tensor datatypes of the Open Inference Protocol
// and the one in-memory form every front end decodes into: a name, a
// datatype, a shape and the row-major little-endian bytes of the elements.
//
// BYTES tensors use Triton's serialized form throughout: each element is a
// 4-byte little-endian length followed by that many bytes. Keeping a single
// representation means the REST JSON decoder, the REST binary extension, gRPC
// typed contents and gRPC raw contents all meet in the same place, and the
// stub receives buffers it can wrap with numpy without copying.
package tensor

import (
	"encoding/binary"
	"fmt"
)

// Datatype is an Open Inference Protocol datatype name, e.g. "FP32".
type Datatype string

// The datatypes of the protocol.
const (
	Bool   Datatype = "BOOL"
	Uint8  Datatype = "UINT8"
	Uint16 Datatype = "UINT16"
	Uint32 Datatype = "UINT32"
	Uint64 Datatype = "UINT64"
	Int8   Datatype = "INT8"
	Int16  Datatype = "INT16"
	Int32  Datatype = "INT32"
	Int64  Datatype = "INT64"
	FP16   Datatype = "FP16"
	FP32   Datatype = "FP32"
	FP64   Datatype = "FP64"
	BF16   Datatype = "BF16"
	Bytes  Datatype = "BYTES"
)

var elementSizes = map[Datatype]int{
	Bool: 1, Uint8: 1, Uint16: 2, Uint32: 4, Uint64: 8,
	Int8: 1, Int16: 2, Int32: 4, Int64: 8,
	FP16: 2, FP32: 4, FP64: 8, BF16: 2,
	Bytes: 0,
}

// Valid reports whether d is a datatype of the protocol.
func (d Datatype) Valid() bool {
	_, ok := elementSizes[d]
	return ok
}

// Size is the size in bytes of one element, or 0 for BYTES, whose elements
// vary in size.
func (d Datatype) Size() int { return elementSizes[d] }

// Tensor is one named input or output.
type Tensor struct {
	Name     string
	Datatype Datatype
	Shape    []int64
	// Data holds the elements, row-major and little-endian; for BYTES, each
	// element is a uint32 length prefix followed by its bytes.
	Data []byte
	// Parameters are the tensor's protocol parameters, if any.
	Parameters map[string]any
	// Shared, when set, says that Data is memory another process can map
	// (a client's shared memory, or a memory file a stub made) that the
	// server may pass on as a descriptor instead of copying it. Whoever
	// replaces Data clears it.
	Shared *Shared
}

// Shared is memory that another process can map, reachable through a
// descriptor that the server may pass to a model stub: bytes of a client's
// registered system shared memory region, or of a sealed memory file a
// stub made (a BLS call's inputs, or a BLS callee's outputs, which the
// server passes on to the calling stub). The one who sets it (the shared
// memory registry, package ipc) keeps FD open and Mem mapped while any
// Hold is unreleased.
type Shared struct {
	// FD is a descriptor of the whole memory object: read-only for an
	// input's bytes, read-write for an output's room.
	FD int
	// Offset is where the bytes start within the object.
	Offset uint64
	// ID names the registration: unique for the server's life, so that a
	// mapping cached under it is never a later registration's.
	ID uint64
	// Mem is the server's own mapping of the bytes: an input's or an
	// output's data, or the room an output may take.
	Mem []byte
	// Hold keeps the region registered and mapped until the returned
	// function is called (once); a stub that was given FD holds it until
	// its reply is in.
	Hold func() (release func())
	// Kept, when set, says the bytes are a memory file the server reuses
	// for later requests (package memfile): a stub is passed it to map
	// privately for one batch, and Kept is called when the stub reports
	// that an array over it outlived its reply, so that the file is never
	// written again.
	Kept func()
}

// ElementCount is the product of the shape's dimensions. It returns an error
// for negative dimensions or a product that overflows.
func ElementCount(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that the tensor's datatype is known and that its data
// holds exactly the number of elements its shape promises.
func (t *Tensor) Validate() error {
	if !t.Datatype.Valid() {
		return fmt.Errorf("tensor %q: unknown datatype %q", t.Name, t.Datatype)
	}
	n, err := ElementCount(t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.Datatype == Bytes {
		got, err := CountBytesElements(t.Data)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if int64(got) != n {
			return fmt.Errorf("tensor %q: shape %v needs %d BYTES elements, got %d", t.Name, t.Shape, n, got)
		}
		return nil
	}
	if want := n * int64(t.Datatype.Size()); int64(len(t.Data)) != want {
		return fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, got %d", t.Name, t.Shape, t.Datatype, want, len(t.Data))
	}
	return nil
}

// CountBytesElements walks serialized BYTES data and counts its elements,
// failing if a length prefix runs past the end.
func CountBytesElements(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if len(b) < 4 {
			return 0, fmt.Errorf("BYTES data truncated in the length prefix of element %d", n)
		}
		l := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(l) > uint64(len(b)) {
			return 0, fmt.Errorf("BYTES element %d declares %d bytes, only %d remain", n, l, len(b))
		}
		b = b[l:]
		n++
	}
	return n, nil
}

// AppendBytesElement appends one serialized BYTES element to dst.
func AppendBytesElement(dst, elem []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(elem)))
	return append(dst, elem...)
}

// SplitBytesElements returns the elements of serialized BYTES data. The
// returned slices alias b.
func SplitBytesElements(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("BYTES data truncated in the length prefix of element %d", len(out))
		}
		l := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(l) > uint64(len(b)) {
			return nil, fmt.Errorf("BYTES element %d declares %d bytes, only %d remain", len(out), l, len(b))
		}
		out = append(out, b[:l])
		b = b[l:]
	}
	return out, nil
}
