package instance

import (
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// Held is the number of requests the instance's current process holds:
// handed to the stub and not ended (executing, or streaming responses),
// and how many of them are streams.
func (i *Instance) Held() (requests, streams int) {
	i.mu.Lock()
	g := i.gen
	i.mu.Unlock()
	if g == nil {
		return 0, 0
	}
	return g.held.Len(), g.held.Streams()
}

// streamVerdict is what one check of the held requests found.
type streamVerdict struct {
	stalled []*scheduler.Task // no response within execute_timeout_seconds
	expired []*scheduler.Task // held longer than MaxStreamDuration
}

// checkStreams is the step of watchStreams: which held requests have gone
// quiet for longer than stall (0 = no limit), and which have been held for
// longer than max.
func checkStreams(held *scheduler.Holder, now time.Time, stall, limit time.Duration) streamVerdict {
	var v streamVerdict
	if stall > 0 {
		v.stalled = held.Overdue(now, stall)
	}
	v.expired = held.Expired(now, limit)
	return v
}

// streamCheckPeriod is how often watchStreams looks: an eighth of the
// tightest limit, within [10 ms, 1 s].
func streamCheckPeriod(stall, limit time.Duration) time.Duration {
	d := limit
	if stall > 0 && stall < d {
		d = stall
	}
	d /= 8
	return min(max(d, 10*time.Millisecond), time.Second)
}

// watchStreams applies execute_timeout_seconds to the time between two
// responses of the requests a generation holds (a stream that makes
// progress is not a hang) and MaxStreamDuration to their whole life.
func (i *Instance) watchStreams(g *generation) {
	defer i.wg.Done()
	stall, limit := i.cfg.Policy.ExecuteTimeout, i.cfg.MaxStreamDuration
	t := time.NewTicker(streamCheckPeriod(stall, limit))
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			if i.applyStreams(g, checkStreams(g.held, now, stall, limit), stall, limit) {
				return
			}
		}
	}
}

// applyStreams carries out a verdict; it reports true when the generation
// is hung and the check ends.
func (i *Instance) applyStreams(g *generation, v streamVerdict, stall, limit time.Duration) bool {
	model, name := i.cfg.Key.Model, i.cfg.Key.Instance
	for _, t := range v.expired {
		t.Finish(nil, &apierr.Error{Code: apierr.DeadlineExceeded, Msg: fmt.Sprintf(
			"model %s: instance %s: the request ran past the %s limit (--max-stream-duration) without its final response",
			model, name, limit)})
	}
	if len(v.stalled) == 0 {
		return false
	}
	msg := fmt.Sprintf("model %s: instance %s: no response within execute_timeout_seconds (%s); the instance is restarted",
		model, name, stall)
	i.mu.Lock()
	g.hung = true
	i.refreshLocked()
	i.mu.Unlock()
	for _, t := range v.stalled {
		t.Finish(nil, &apierr.Error{Code: apierr.DeadlineExceeded, Msg: msg})
	}
	i.post(health.Event{Kind: health.ExecuteResult, TimedOut: true,
		Reason: fmt.Sprintf("a request got no response for %s", stall), PID: g.proc.pid})
	return true
}
