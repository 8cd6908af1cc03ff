package ipc

import (
	"context"
	"encoding/json"
	"fmt"
)

// Frames the stub starts. They travel on the control connection: the stub's
// control thread reads their replies, so a model calling Metric.increment
// inside execute (on the stub's main thread) is answered at once.
const (
	kindLog    kind = 12
	kindMetric kind = 13
)

// LogRecord is one pb_utils.Logger call.
type LogRecord struct {
	// Level is INFO, WARNING, ERROR or VERBOSE.
	Level   string `json:"level"`
	Message string `json:"message"`
	File    string `json:"file"`
	Line    int    `json:"line"`
}

// MetricCall is one pb_utils.MetricFamily or Metric operation. Op is one of
// family_new (Name, Description, Kind), family_delete (ID), metric_new
// (Family, Labels, Buckets), metric_delete (ID), increment, set, observe
// (ID, Value) and value (ID).
type MetricCall struct {
	Op          string            `json:"op"`
	ID          uint64            `json:"id,omitempty"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Kind        string            `json:"kind,omitempty"`
	Family      uint64            `json:"family,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Buckets     []float64         `json:"buckets,omitempty"`
	Value       float64           `json:"value,omitempty"`
	// Async is set on updates (increment, set, observe) the stub sent
	// without waiting: they get no reply, and a failure is logged.
	Async bool `json:"async,omitempty"`
}

// MetricReply answers a MetricCall: the id of what was created, or the
// metric's value.
type MetricReply struct {
	ID    uint64  `json:"id,omitempty"`
	Value float64 `json:"value"`
}

// StubCalls serves the requests a stub makes of the server.
type StubCalls interface {
	// Log writes a model's log record.
	Log(rec LogRecord)
	// Metric runs a metric operation; an error is raised in the model.
	Metric(call MetricCall) (MetricReply, error)
}

// Option configures a Client.
type Option func(*Client)

// WithStubCalls serves the stub's LOG and METRIC frames with h. Without it
// they are answered with an error (METRIC) or dropped (LOG).
func WithStubCalls(h StubCalls) Option {
	return func(c *Client) { c.stubCalls = h }
}

// serveStubCall answers a frame the stub started. It runs on the reader
// goroutine of the connection the frame came on; what it does is quick (a
// log record, a metric update), and replies go out on the same connection.
// It reports false on a frame kind the stub may not start.
func (c *Client) serveStubCall(l *link, f frame) bool {
	switch f.kind {
	case kindLog:
		var rec LogRecord
		if err := json.Unmarshal(f.body, &rec); err != nil {
			c.log.Warn("undecodable model log record", LogKeyErr, err)
			return true
		}
		if c.stubCalls != nil {
			c.stubCalls.Log(rec)
		}
		return true
	case kindMetric:
		var call MetricCall
		reply, err := MetricReply{}, error(nil)
		if uerr := json.Unmarshal(f.body, &call); uerr != nil {
			err = fmt.Errorf("undecodable metric call: %w", uerr)
		} else if c.stubCalls == nil {
			err = fmt.Errorf("custom metrics are not available in this server")
		} else {
			reply, err = c.stubCalls.Metric(call)
		}
		if call.Async {
			if err != nil {
				c.log.Warn("model metric update failed", "op", call.Op, LogKeyErr, err)
			}
			return true
		}
		c.replyToStub(l, f, reply, err)
		return true
	}
	return false
}

// replyToStub sends the reply to a stub-started frame: v as JSON, or err as
// {"message": ...} with the error flag.
func (c *Client) replyToStub(l *link, f frame, v any, err error) {
	flags := flagReply
	var body []byte
	if err != nil {
		flags |= flagError
		body, _ = json.Marshal(map[string]string{"message": err.Error()})
	} else {
		body, _ = json.Marshal(v)
	}
	buf := make([]byte, headerSize, headerSize+len(body))
	buf = append(buf, body...)
	putHeader(buf, len(body), f.kind, flags, f.seq)
	if werr := c.writeOn(context.Background(), l, f.kind, [][]byte{buf}, nil); werr != nil {
		c.log.Debug("cannot answer the stub", LogKeyKind, f.kind.String(), LogKeyErr, werr)
	}
}
