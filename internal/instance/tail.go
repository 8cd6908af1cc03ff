package instance

import (
	"bytes"
	"log/slog"
	"sync"
)

// tailSize bounds how much of a stub's output is kept for error messages.
const tailSize = 8 << 10

// outputLog forwards a stub's stdout and stderr to the log, one record per
// line, and keeps a bounded tail so that a crash can be explained.
type outputLog struct {
	log *slog.Logger

	mu      sync.Mutex
	partial []byte
	tail    []byte
	total   int64
}

func (o *outputLog) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.total += int64(len(p))
	o.tail = append(o.tail, p...)
	if len(o.tail) > tailSize {
		o.tail = append(o.tail[:0], o.tail[len(o.tail)-tailSize:]...)
	}
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.log.Info("stub output", "line", string(o.partial[:i]))
		o.partial = o.partial[i+1:]
	}
	if len(o.partial) > tailSize {
		o.log.Info("stub output", "line", string(o.partial))
		o.partial = o.partial[:0]
	}
	return len(p), nil
}

// Tail returns the last lines of output, saying when earlier output was cut.
func (o *outputLog) Tail(max int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := bytes.TrimSpace(o.tail)
	if len(t) > max {
		t = t[len(t)-max:]
		if i := bytes.IndexByte(t, '\n'); i >= 0 {
			t = t[i+1:]
		}
	}
	return string(t)
}
