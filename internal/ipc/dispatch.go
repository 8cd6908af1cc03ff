package ipc

import "fmt"

// dispatch handles a frame the stub started (one without the reply flag),
// by kind. Each kind's handling lives in a function of its own; an error is
// a protocol violation and ends the connection.
func (c *Client) dispatch(l *link, f frame) error {
	switch f.kind {
	case kindResponse:
		return c.onResponse(f)
	case kindLog, kindMetric:
		c.serveStubCall(l, f) // stubcalls.go
		return nil
	case kindBLSInfer, kindBLSCancel, kindModelControl:
		c.serveStubFrame(f) // call.go
		return nil
	}
	return fmt.Errorf("the stub sent a %s request (seq %d)", f.kind, f.seq)
}
