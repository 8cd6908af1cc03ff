package responder

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil/internal/api/rest"
	"github.com/vigilhq/vigil/internal/health"
)

// ChildConfig configures the child's side.
type ChildConfig struct {
	StaleAfter  time.Duration
	HideReasons bool
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Serve is the child: it answers probes on lis from the snapshots read
// from r until r ends (the server is gone: nil) or lis fails.
func Serve(r io.Reader, lis net.Listener, cfg ChildConfig) error {
	src := newLast(cfg.StaleAfter, cfg.Now)
	srv := &http.Server{
		Handler:           rest.NewHealthHandler(src, rest.Config{HideReasons: cfg.HideReasons}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	followed := make(chan error, 1)
	go func() {
		followed <- src.Follow(r)
		srv.Close()
	}()
	err := srv.Serve(lis)
	if errors.Is(err, http.ErrServerClosed) {
		return <-followed
	}
	return err
}

// last is the last snapshot received, as a rest.HealthSource.
type last struct {
	staleAfter time.Duration
	now        func() time.Time
	latest     atomic.Pointer[received]
}

type received struct {
	snap *health.Snapshot
	at   time.Time
}

// newLast returns a last with nothing received yet.
func newLast(staleAfter time.Duration, now func() time.Time) *last {
	if now == nil {
		now = time.Now
	}
	return &last{staleAfter: staleAfter, now: now}
}

// Follow stores each snapshot read from r until r ends: nil at its end,
// else the error that ended it.
func (l *last) Follow(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var s health.Snapshot
		if err := dec.Decode(&s); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		l.latest.Store(&received{snap: &s, at: l.now()})
	}
}

// Snapshot is the last snapshot received; once none has come for longer
// than staleAfter, a copy of it whose ping check fails (Silent). Before
// the first, an empty snapshot: live, not yet started.
func (l *last) Snapshot() *health.Snapshot {
	r := l.latest.Load()
	if r == nil {
		return &health.Snapshot{}
	}
	if age := l.now().Sub(r.at); age > l.staleAfter {
		c := *r.snap
		c.Silent = age
		return &c
	}
	return r.snap
}
