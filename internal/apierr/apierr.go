// Package apierr holds vigil's typed errors and the one table that maps them
// to HTTP status codes and gRPC codes, so that both front ends answer the same
// failure the same way.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
)

// Code classifies an error for the client.
type Code int

// The error classes. Their HTTP and gRPC mappings are in the table below.
const (
	Internal          Code = iota // the model raised, or vigil failed
	InvalidArgument               // malformed request: shape, datatype, JSON, names
	NotFound                      // unknown model or version
	Unavailable                   // not ready, no routable instance, instance died, draining
	DeadlineExceeded              // the request or its execution ran out of time
	TooLarge                      // request body over the limit
	Unauthenticated               // admin token missing
	PermissionDenied              // admin token wrong
	Unsupported                   // a feature vigil (or this configuration) does not offer: 501, as Triton's UNSUPPORTED
	ResourceExhausted             // too many concurrent requests
	Cancelled                     // the client went away, or cancelled the request (also a model's TritonError.CANCELLED)
	Unimplemented                 // the endpoint cannot serve this kind of model (a decoupled model on /infer)
	AlreadyExists                 // a name already taken (a shared memory region): 400, as Triton's ALREADY_EXISTS
	Unknown                       // an error of no known class, e.g. a model's TritonError.UNKNOWN: 400, as Triton maps UNKNOWN
)

var table = map[Code]struct {
	name string
	http int
	grpc codes.Code
}{
	Internal:          {"internal", http.StatusInternalServerError, codes.Internal},
	InvalidArgument:   {"invalid argument", http.StatusBadRequest, codes.InvalidArgument},
	NotFound:          {"not found", http.StatusNotFound, codes.NotFound},
	Unavailable:       {"unavailable", http.StatusServiceUnavailable, codes.Unavailable},
	DeadlineExceeded:  {"deadline exceeded", http.StatusGatewayTimeout, codes.DeadlineExceeded},
	TooLarge:          {"too large", http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	Unauthenticated:   {"unauthenticated", http.StatusUnauthorized, codes.Unauthenticated},
	PermissionDenied:  {"permission denied", http.StatusForbidden, codes.PermissionDenied},
	Unsupported:       {"unsupported", http.StatusNotImplemented, codes.Unimplemented},
	ResourceExhausted: {"resource exhausted", http.StatusServiceUnavailable, codes.Unavailable},
	// Triton maps CANCELLED to 400; the client has usually gone anyway.
	Cancelled:     {"cancelled", http.StatusBadRequest, codes.Canceled},
	Unimplemented: {"unimplemented", http.StatusNotImplemented, codes.Unimplemented},
	AlreadyExists: {"already exists", http.StatusBadRequest, codes.AlreadyExists},
	Unknown:       {"unknown", http.StatusBadRequest, codes.Unknown},
}

func (c Code) String() string { return table[c].name }

// Error is a classified error. Msg is the client-facing message and names the
// model, input or field at fault.
type Error struct {
	Code Code
	Msg  string
	// RetryAfter, when set, is sent as the Retry-After header of 503s.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an Error with a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Wrap classifies err, keeping it reachable through errors.Is and errors.As.
func Wrap(code Code, err error, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if err != nil {
		msg += ": " + err.Error()
	}
	return &Error{Code: code, Msg: msg, Err: err}
}

// Unavailablef is an Unavailable error with the default Retry-After.
func Unavailablef(format string, args ...any) *Error {
	return &Error{Code: Unavailable, Msg: fmt.Sprintf(format, args...), RetryAfter: time.Second}
}

// CodeOf classifies any error: an *Error anywhere in the chain decides,
// context deadlines are DeadlineExceeded, anything else is Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return DeadlineExceeded
	}
	return Internal
}

// HTTPStatus is the HTTP status code for err.
func HTTPStatus(err error) int { return table[CodeOf(err)].http }

// GRPCCode is the gRPC code for err.
func GRPCCode(err error) codes.Code { return table[CodeOf(err)].grpc }

// RetryAfter is how long a client should wait before retrying, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		if e.RetryAfter == 0 && (e.Code == Unavailable || e.Code == ResourceExhausted) {
			return time.Second
		}
		return e.RetryAfter
	}
	return 0
}
