package instance

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

const (
	// tailSize bounds how much of a stub's output is kept for error
	// messages.
	tailSize = 8 << 10
	// maxLogLine bounds one logged line; longer lines are cut, saying how
	// long they were.
	maxLogLine = 2 << 10
	// logBurst and logRate bound how many lines of stub output reach the
	// log: a model printing in a loop must not flood it. Lines over the
	// budget are counted and the count is logged when logging resumes.
	logBurst = 200
	logRate  = 50 // lines per second
)

// outputLog forwards a stub's stdout and stderr to the log, one record per
// line within a budget, and keeps a bounded tail so that a crash can be
// explained.
type outputLog struct {
	log *slog.Logger
	now func() time.Time // nil: time.Now

	mu         sync.Mutex
	partial    []byte
	tail       []byte
	tokens     float64
	refilled   time.Time
	suppressed int
	// long counts the bytes of a line already logged in part and being
	// skipped up to its newline.
	long int
}

func (o *outputLog) Write(p []byte) (int, error) {
	n := len(p)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tail = append(o.tail, p...)
	if len(o.tail) > tailSize {
		o.tail = append(o.tail[:0], o.tail[len(o.tail)-tailSize:]...)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if o.long > 0 {
			// The rest of a line too long to log: skip to its end.
			if i < 0 {
				o.long += len(p)
				break
			}
			o.long = 0
			p = p[i+1:]
			continue
		}
		if i < 0 {
			o.partial = append(o.partial, p...)
			if len(o.partial) > maxLogLine {
				o.logLocked(o.partial[:maxLogLine], true)
				o.long = len(o.partial)
				o.partial = o.partial[:0]
			}
			break
		}
		o.partial = append(o.partial, p[:i]...)
		if len(o.partial) > maxLogLine {
			o.logLocked(o.partial[:maxLogLine], true)
		} else {
			o.logLocked(o.partial, false)
		}
		o.partial = o.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

// logLocked logs one line if the budget allows; cut says the line went on
// beyond what is logged.
func (o *outputLog) logLocked(line []byte, cut bool) {
	now := time.Now()
	if o.now != nil {
		now = o.now()
	}
	if o.refilled.IsZero() {
		o.tokens, o.refilled = logBurst, now
	}
	o.tokens = min(logBurst, o.tokens+now.Sub(o.refilled).Seconds()*logRate)
	o.refilled = now
	if o.tokens < 1 {
		o.suppressed++
		return
	}
	o.tokens--
	if o.suppressed > 0 {
		o.log.Warn("stub output suppressed", "lines", o.suppressed)
		o.suppressed = 0
	}
	if cut {
		o.log.Info("stub output", "line", fmt.Sprintf("%s… (line cut at %d bytes)", line, maxLogLine))
		return
	}
	o.log.Info("stub output", "line", string(line))
}

// Tail returns the last lines of output.
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
