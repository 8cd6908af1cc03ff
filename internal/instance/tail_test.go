package instance

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestOutputLogBoundsLinesAndRate(t *testing.T) {
	var buf bytes.Buffer
	// A clock that does not move: the budget does not refill.
	frozen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := &outputLog{log: slog.New(slog.NewTextHandler(&buf, nil)), now: func() time.Time { return frozen }}
	// One long line, written in pieces as a pipe delivers it: one record.
	for i := 0; i < 40; i++ {
		o.Write([]byte(strings.Repeat("x", maxLogLine/2)))
	}
	o.Write([]byte("\n"))
	if n := strings.Count(buf.String(), "stub output"); n != 1 || !strings.Contains(buf.String(), "line cut at") || buf.Len() > 2*maxLogLine+200 {
		t.Errorf("a long line became %d records, %d bytes", n, buf.Len())
	}
	buf.Reset()
	for i := 0; i < 5*logBurst; i++ {
		o.Write([]byte("spam\n"))
	}
	if n := strings.Count(buf.String(), "spam"); n != logBurst-1 {
		t.Errorf("%d lines logged from a burst of %d, budget %d", n, 5*logBurst, logBurst)
	}
	// A second later the budget has room again, and the gap is reported.
	frozen = frozen.Add(time.Second)
	o.Write([]byte("after\n"))
	if !strings.Contains(buf.String(), "stub output suppressed") || !strings.Contains(buf.String(), "after") {
		t.Errorf("resumed logging does not report the suppressed lines: %q", buf.String()[max(0, buf.Len()-300):])
	}
	if got := o.Tail(64); !strings.HasSuffix(got, "after") {
		t.Errorf("tail %q", got)
	}
}
