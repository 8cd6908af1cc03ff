package inference

import (
	"errors"
	"strconv"
)

// Request flags, as Triton numbers them (TRITONSERVER_REQUEST_FLAG_*). A
// Python model reads them with request.flags().
const (
	FlagSequenceStart uint32 = 1
	FlagSequenceEnd   uint32 = 2
)

// The request parameters that carry sequence information. They are
// reserved: the front ends take them out of Parameters and into Sequence.
const (
	ParamSequenceID    = "sequence_id"
	ParamSequenceStart = "sequence_start"
	ParamSequenceEnd   = "sequence_end"
)

// MaxCorrelationIDLength bounds a string correlation ID, as in Triton.
const MaxCorrelationIDLength = 128

// CorrelationID identifies the sequence a request belongs to: an unsigned
// number or a string, as Triton allows. The zero value (0, or "") means the
// request is not part of a sequence.
type CorrelationID struct {
	N        uint64
	S        string
	IsString bool
}

// NumericID returns the numeric correlation ID n.
func NumericID(n uint64) CorrelationID { return CorrelationID{N: n} }

// StringID returns the string correlation ID s.
func StringID(s string) CorrelationID { return CorrelationID{S: s, IsString: true} }

// IsZero reports whether the ID names no sequence.
func (c CorrelationID) IsZero() bool {
	if c.IsString {
		return c.S == ""
	}
	return c.N == 0
}

// String is the ID as Triton prints it in messages: the decimal number or
// the string.
func (c CorrelationID) String() string {
	if c.IsString {
		return c.S
	}
	return strconv.FormatUint(c.N, 10)
}

// Sequence is a request's place in a sequence of a stateful model.
type Sequence struct {
	ID    CorrelationID
	Start bool
	End   bool
}

// Flags is the request's flags() bitmask.
func (s Sequence) Flags() uint32 {
	var f uint32
	if s.Start {
		f |= FlagSequenceStart
	}
	if s.End {
		f |= FlagSequenceEnd
	}
	return f
}

// ErrCorrelationIDTooLong is the error for a string correlation ID over
// MaxCorrelationIDLength characters; the text is Triton's.
var ErrCorrelationIDTooLong = errors.New("string correlation ID cannot be longer than 128 characters")
