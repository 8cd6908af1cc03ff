package ipc

import (
	"errors"

	"github.com/vigilhq/vigil/internal/apierr"
)

// ErrClosed is wrapped by every error that comes from losing the connection
// to the stub: it exited, was killed, or Close was called.
var ErrClosed = errors.New("stub connection closed")

// ModelError is a failure the model (or the stub on its behalf) reported.
//
// It describes either a raised Python exception (Type is set, Traceback
// usually too) or a condition without one: a per-request
// InferenceResponse(error=TritonError(...)), or execute returning something
// other than one InferenceResponse per request.
type ModelError struct {
	// Op is the step that failed, e.g. "import model.py", "initialize",
	// "execute", "finalize"; empty for a per-request error.
	Op string
	// Type is the Python exception class name, e.g. "ValueError"; empty
	// when nothing raised.
	Type      string
	Message   string
	Traceback string
	// Code is a Triton error code name: "INTERNAL", "INVALID_ARG",
	// "NOT_FOUND", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS",
	// "CANCELLED" or "UNKNOWN".
	Code string
}

// Error returns "<Type>: <Message>", or only the message when nothing
// raised (a TritonError's message, for a per-request error).
func (e *ModelError) Error() string {
	if e.Type == "" {
		return e.Message
	}
	return e.Type + ": " + e.Message
}

// APICode classifies the error for clients the way Triton maps its error
// codes: each TritonError code keeps its meaning (UNKNOWN, INVALID_ARG,
// ALREADY_EXISTS and CANCELLED answer HTTP 400, UNSUPPORTED 501), and
// everything else (an exception, INTERNAL) is internal.
func (e *ModelError) APICode() apierr.Code {
	switch e.Code {
	case "INVALID_ARG":
		return apierr.InvalidArgument
	case "ALREADY_EXISTS":
		return apierr.AlreadyExists
	case "CANCELLED":
		return apierr.Cancelled
	case "UNKNOWN":
		return apierr.Unknown
	case "NOT_FOUND":
		return apierr.NotFound
	case "UNAVAILABLE":
		return apierr.Unavailable
	case "UNSUPPORTED":
		return apierr.Unsupported
	}
	return apierr.Internal
}

// raisedError prefixes a ModelError with the step that raised it, giving
// messages such as "execute raised RuntimeError: CUDA error: out of memory",
// while errors.As still finds the *ModelError.
type raisedError struct{ me *ModelError }

func (e *raisedError) Error() string {
	if e.me.Type == "" || e.me.Op == "" {
		return e.me.Error()
	}
	return e.me.Op + " raised " + e.me.Error()
}

func (e *raisedError) Unwrap() error { return e.me }
