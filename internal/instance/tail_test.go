package instance

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestOutputLogBoundsLinesAndRate(t *testing.T) {
	var buf bytes.Buffer
	o := &outputLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	o.Write([]byte(strings.Repeat("x", 3*maxLogLine) + "\n"))
	if !strings.Contains(buf.String(), "bytes)") || buf.Len() > 2*maxLogLine+200 {
		t.Errorf("a long line was not cut: %d bytes logged", buf.Len())
	}
	buf.Reset()
	for i := 0; i < 5*logBurst; i++ {
		o.Write([]byte("spam\n"))
	}
	if n := strings.Count(buf.String(), "spam"); n > logBurst+5 {
		t.Errorf("%d lines logged from a burst of %d, budget %d", n, 5*logBurst, logBurst)
	}
	if got := o.Tail(64); !strings.HasSuffix(got, "spam") {
		t.Errorf("tail %q", got)
	}
}
