// Package status serves vigil's status page: an HTML page at / and /status
// that shows the server's probe verdicts, every model and instance, a
// timeline of recent transitions and per-model traffic, kept current by a
// Server-Sent Events stream (/status/events) fed by the health engine's
// snapshot, the one the probes read. Nothing here asks a model anything:
// each event is the snapshot as it is plus the in-process traffic counters.
//
// The page (HTML, CSS and script in one file) is embedded in the binary and
// loads nothing from elsewhere.
package status

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

//go:embed page.html
var page []byte

// Source is the health engine as the page sees it.
type Source interface {
	// Snapshot returns the current snapshot; nil before the first one.
	Snapshot() *health.Snapshot
	// Subscribe returns a channel that receives a value after each change
	// of the snapshot, and a function that ends the subscription.
	Subscribe() (<-chan struct{}, func())
}

// Config configures the page.
type Config struct {
	// HideReasons withholds every free-text reason (--health-hide-reasons).
	HideReasons bool
	// Traffic returns the cumulative traffic counters of every model
	// version; nil shows no traffic.
	Traffic func() []Counters
	// SampleInterval is how often traffic is sampled for the rates (and
	// the stream refreshed when the snapshot does not change); 0 means 1s.
	SampleInterval time.Duration
	// InFlight, when set, gives the requests an instance holds now and how
	// many of them are streams. It must not block.
	InFlight func(health.InstanceKey) (requests, streams int)
	// MaxStreams bounds the open event streams; 0 means 64.
	MaxStreams int
	Logger     *slog.Logger
}

// Page serves the status page and its event stream.
type Page struct {
	src  Source
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	streams int
}

// New returns the page.
func New(src Source, cfg Config) *Page {
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = time.Second
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Page{src: src, cfg: cfg, log: log, mux: http.NewServeMux(), done: make(chan struct{})}
	p.mux.HandleFunc("/{$}", p.servePage)
	p.mux.HandleFunc("/status", p.servePage)
	p.mux.HandleFunc("/status/events", p.serveEvents)
	p.mux.HandleFunc("/status/view", p.serveView)
	p.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no route for "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	})
	return p
}

// Patterns are the routes a server mux should hand to the page.
func Patterns() []string { return []string{"/{$}", "/status", "/status/"} }

// ServeHTTP serves /, /status, /status/events and /status/view.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method "+r.Method+" is not allowed on "+r.URL.Path+"; use GET", http.StatusMethodNotAllowed)
		return
	}
	p.mux.ServeHTTP(w, r)
}

// Close ends every open event stream and refuses new ones, so that a
// server shutdown does not wait on browsers.
func (p *Page) Close() { p.once.Do(func() { close(p.done) }) }

func (p *Page) servePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Everything is inline: no script, style or connection goes elsewhere.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	_, _ = w.Write(page)
}

// serveView is one view as JSON, for scripts and for the page's first
// paint without waiting for the stream.
func (p *Page) serveView(w http.ResponseWriter, r *http.Request) {
	st := p.newStream(time.Now())
	b, err := json.Marshal(st.view())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func (p *Page) acquire() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streams >= p.cfg.MaxStreams {
		return false
	}
	p.streams++
	return true
}

func (p *Page) release() {
	p.mu.Lock()
	p.streams--
	p.mu.Unlock()
}

// writeTimeout bounds each event write: a browser that stops reading loses
// its stream instead of holding a goroutine.
const writeTimeout = 10 * time.Second

// keepAlive is how often an idle stream sends a comment, so proxies keep it.
const keepAlive = 15 * time.Second

// serveEvents is the event stream: one "view" event at once, then one after
// every snapshot change and every traffic sample that changes the view.
// Each event's data is {"now": <server time>, "view": <View>}.
func (p *Page) serveEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case <-p.done:
		http.Error(w, "the server is shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	if !p.acquire() {
		http.Error(w, fmt.Sprintf("too many status streams open (limit %d)", p.cfg.MaxStreams), http.StatusServiceUnavailable)
		return
	}
	defer p.release()
	changed, cancel := p.src.Subscribe()
	defer cancel()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)

	st := p.newStream(time.Now())
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The browser retries a lost stream after a second.
	if !write([]byte("retry: 1000\n\n")) {
		return
	}
	send := func() bool {
		ev, ok := st.event(time.Now())
		return !ok || write(ev)
	}
	if !send() {
		return
	}
	tick := time.NewTicker(p.cfg.SampleInterval)
	defer tick.Stop()
	idle := time.NewTimer(keepAlive)
	defer idle.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-p.done:
			return
		case <-changed:
			if !send() {
				return
			}
		case now := <-tick.C:
			st.resample(now)
			if !send() {
				return
			}
		case <-idle.C:
			if !write([]byte(": keep-alive\n\n")) {
				return
			}
		}
		idle.Reset(keepAlive)
	}
}

// stream is one client's state: the two latest traffic samples and the
// last event sent. Its step functions are called by the loop above.
type stream struct {
	p         *Page
	prev, cur sample
	last      []byte
}

func (p *Page) newStream(now time.Time) *stream {
	return &stream{p: p, cur: newSample(now, p.counters())}
}

func (p *Page) counters() []Counters {
	if p.cfg.Traffic == nil {
		return nil
	}
	return p.cfg.Traffic()
}

// resample takes a new traffic sample; the rates run between the last two.
func (s *stream) resample(now time.Time) {
	s.prev, s.cur = s.cur, newSample(now, s.p.counters())
}

func (s *stream) view() *View {
	snap := s.p.src.Snapshot()
	if snap == nil {
		snap = &health.Snapshot{}
	}
	return build(snap, s.prev, s.cur, s.p.cfg.HideReasons, s.p.cfg.InFlight)
}

// event returns the next "view" event, and false when the view has not
// changed since the last one sent. Its data is {"now": <server time>,
// "view": <View>}: the page ages states by the server's clock.
func (s *stream) event(now time.Time) ([]byte, bool) {
	b, err := json.Marshal(s.view())
	if err != nil {
		s.p.log.Error("status view does not encode", "err", err)
		return nil, false
	}
	if bytes.Equal(b, s.last) {
		return nil, false
	}
	s.last = b
	stamp, _ := now.UTC().MarshalJSON()
	var ev bytes.Buffer
	ev.Grow(len(b) + 80)
	ev.WriteString(`event: view` + "\n" + `data: {"now":`)
	ev.Write(stamp)
	ev.WriteString(`,"view":`)
	ev.Write(b) // JSON from encoding/json has no raw newlines
	ev.WriteString("}\n\n")
	return ev.Bytes(), true
}
