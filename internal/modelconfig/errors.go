package modelconfig

import (
	"fmt"
	"strconv"
)

// Error is a configuration error. Its message names the file, the position
// when known, and the field or key at fault, for example
//
//	models/x/config.pbtxt:3:1: unknown field "dynamic_batchin" (did you mean "dynamic_batching"?)
//	models/x/config.pbtxt: input[0].dims[1]: must be ≥ 1 or -1 (variable), got 0
//	models/x/health.yaml: restart_threshold_seconds (10) must be ≥ stop_traffic_threshold_seconds (20)
type Error struct {
	// File is the path of the file as it was given.
	File string
	// Line and Column are 1-based; 0 when unknown.
	Line, Column int
	// Field is the field or key at fault as a path such as "input[0].dims"
	// or "restart_backoff.max_seconds"; empty when the error is about the
	// file as a whole.
	Field string
	// Msg describes the problem; it already names Field.
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
		if e.Column > 0 {
			loc += ":" + strconv.Itoa(e.Column)
		}
	}
	return loc + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// fieldError returns an *Error whose message starts with the field path.
func fieldError(file, field, format string, args ...any) *Error {
	return &Error{File: file, Field: field, Msg: field + ": " + fmt.Sprintf(format, args...)}
}
