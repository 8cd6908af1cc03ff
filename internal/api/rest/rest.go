package rest

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// DefaultMaxRequestBytes is the request body limit when Config.MaxRequestBytes
// is zero.
const DefaultMaxRequestBytes int64 = 64 << 20

// Models is what the REST API needs from the model manager.
type Models interface {
	// Infer runs one inference request. Errors are classified with apierr.
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
	// InferStream runs a request and passes each of its responses to emit
	// (see model.Manager.InferStream); generate and generate_stream use it.
	InferStream(ctx context.Context, req *inference.Request, emit func(model.Reply) error) error
	// Metadata describes a model version; an empty version means the
	// server's choice.
	Metadata(name, version string) (*model.Metadata, error)
	// ConfigJSON is the model's configuration as Triton's JSON ModelConfig.
	ConfigJSON(name, version string) ([]byte, error)
	// Stats are the statistics of one model's versions; name "" means all
	// models.
	Stats(name, version string) ([]model.Stats, error)
	// Index lists the repository's model versions with their runtime state.
	Index(ctx context.Context, readyOnly bool) []model.IndexEntry
	// Load loads (or reloads) a model; Unload unloads it.
	Load(ctx context.Context, name string, params map[string]any) error
	Unload(ctx context.Context, name string, params map[string]any) error
}

// HealthSource gives the current health snapshot. It must return quickly and
// never wait on a model.
type HealthSource interface {
	Snapshot() *health.Snapshot
}

// Config configures the handlers.
type Config struct {
	// ServerName, ServerVersion and Extensions are the server metadata.
	ServerName, ServerVersion string
	Extensions                []string
	// MaxRequestBytes limits request bodies (413 above it); 0 means
	// DefaultMaxRequestBytes, a negative value means no limit.
	MaxRequestBytes int64
	// MaxConcurrentRequestBytes bounds the body bytes buffered by all
	// requests at once (503 with Retry-After above it); 0 means
	// DefaultMaxConcurrentRequestBytes, a negative value means no bound.
	MaxConcurrentRequestBytes int64
	// AdminToken, when non-empty, protects the repository API: requests need
	// "Authorization: Bearer <token>" (401 when missing, 403 when wrong).
	AdminToken string
	// HideReasons withholds failure reasons from health endpoints
	// (--health-hide-reasons), for ports reachable by the public.
	HideReasons bool
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// SharedMemory serves the system shared memory routes; nil means a
	// registry with client shared memory disabled.
	SharedMemory SharedMemory
	// Status, when set, serves the status page at / and /status/
	// (internal/status).
	Status http.Handler
	// InFlight, when set, gives the requests an instance holds and how many
	// of them are streams, for the JSON form of the probes. It must not
	// block.
	InFlight func(health.InstanceKey) (requests, streams int)
	// Logger receives request failures that are vigil's fault; nil discards.
	Logger *slog.Logger
	// BodyFiles, when set, receives large binary inference bodies, whose
	// large inputs then reach the stub as a descriptor of the pages they
	// were read into (package memfile); nil reads them into Go memory.
	BodyFiles *memfile.Pool
}

// server holds the handlers' dependencies; its mutable state (the byte
// budget, filesFailed) is safe for concurrent use, so one value serves
// every request concurrently.
type server struct {
	models   Models
	health   HealthSource
	cfg      Config
	log      *slog.Logger
	maxBytes int64
	budget   *byteBudget
	files    *memfile.Pool
	// filesFailed is set once a memory file could not be made: bodies go
	// to Go memory from then on.
	filesFailed atomic.Bool
}

func newServer(m Models, h HealthSource, cfg Config) *server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.SharedMemory == nil {
		cfg.SharedMemory = sharedmemory.New(sharedmemory.Config{})
	}
	maxBytes := cfg.MaxRequestBytes
	if maxBytes == 0 {
		maxBytes = DefaultMaxRequestBytes
	}
	budget := cfg.MaxConcurrentRequestBytes
	if budget == 0 {
		budget = DefaultMaxConcurrentRequestBytes
	}
	if budget > 0 && maxBytes > 0 && budget <= maxBytes {
		budget = maxBytes + 1 // room for one body of the largest size at least
	}
	return &server{models: m, health: h, cfg: cfg, log: log, maxBytes: maxBytes, budget: &byteBudget{limit: budget}, files: cfg.BodyFiles}
}

// NewHandler returns the full REST API: inference, metadata, statistics,
// repository, health, probes and metrics.
func NewHandler(m Models, h HealthSource, cfg Config) http.Handler {
	s := newServer(m, h, cfg)
	mux := http.NewServeMux()
	s.registerHealth(mux)

	for _, rt := range s.apiRoutes() {
		h := rt.h
		if rt.admin {
			h = s.admin(h)
		}
		s.handle(mux, rt.method, rt.pattern, h)
	}
	return s.closeWhenDraining(mux)
}

// closeWhenDraining ends keep-alive from the moment the drain starts: every
// response then carries "Connection: close", so a client that keeps sending
// through SIGTERM opens a new connection per request, and no idle
// keep-alive connection is left for the listener close to race with (a
// request sent on one just as it closes would get EOF and no answer).
func (s *server) closeWhenDraining(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.snapshot().Draining {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// route is one route of the API. Admin routes need the admin token (when
// one is configured); the list is the one place that says which they are.
type route struct {
	method, pattern string
	h               http.HandlerFunc
	admin           bool
}

// apiRoutes are the inference, metadata, statistics and repository routes
// (health routes: registerHealth).
func (s *server) apiRoutes() []route {
	rs := []route{
		{method: http.MethodGet, pattern: "/v2", h: s.serverMetadata},
		{method: http.MethodGet, pattern: "/v2/{$}", h: s.serverMetadata},
		{method: http.MethodGet, pattern: "/v2/models/stats", h: s.modelStats},
	}
	for _, base := range []string{"/v2/models/{model}", "/v2/models/{model}/versions/{version}"} {
		rs = append(rs,
			route{method: http.MethodGet, pattern: base, h: s.modelMetadata},
			route{method: http.MethodGet, pattern: base + "/config", h: s.modelConfig},
			route{method: http.MethodGet, pattern: base + "/stats", h: s.modelStats},
			route{method: http.MethodPost, pattern: base + "/infer", h: s.infer},
			route{method: http.MethodPost, pattern: base + "/generate", h: s.generate},
			route{method: http.MethodPost, pattern: base + "/generate_stream", h: s.generateStream},
		)
	}
	return append(append(rs,
		route{method: http.MethodPost, pattern: "/v2/repository/index", h: s.repositoryIndex, admin: true},
		route{method: http.MethodPost, pattern: "/v2/repository/models/{model}/load", h: s.repositoryLoad, admin: true},
		route{method: http.MethodPost, pattern: "/v2/repository/models/{model}/unload", h: s.repositoryUnload, admin: true},
	), s.sharedMemoryRoutes()...)
}

// NewHealthHandler returns only the health routes (/v2/health/*, model
// readiness, /livez, /readyz, /startupz), /metrics and the status page, for
// --health-port.
func NewHealthHandler(h HealthSource, cfg Config) http.Handler {
	s := newServer(nil, h, cfg)
	mux := http.NewServeMux()
	s.registerHealth(mux)
	return s.closeWhenDraining(mux)
}

// NewMetricsHandler serves metrics at /metrics (and /metrics/), for
// --metrics-port, as Triton's metrics port does.
func NewMetricsHandler(metrics http.Handler) http.Handler {
	s := newServer(nil, nil, Config{})
	mux := http.NewServeMux()
	s.handle(mux, http.MethodGet, "/metrics", metrics.ServeHTTP)
	s.handle(mux, http.MethodGet, "/metrics/", metrics.ServeHTTP)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErrorStatus(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path+"; metrics are at /metrics")
	})
	return mux
}

func (s *server) registerHealth(mux *http.ServeMux) {
	s.handle(mux, http.MethodGet, "/v2/health/live", s.serverLive)
	s.handle(mux, http.MethodGet, "/v2/health/ready", s.serverReady)
	s.handle(mux, http.MethodGet, "/v2/models/{model}/ready", s.modelReady)
	s.handle(mux, http.MethodGet, "/v2/models/{model}/versions/{version}/ready", s.modelReady)
	for _, p := range []health.Probe{health.ProbeLive, health.ProbeReady, health.ProbeStartup} {
		s.handle(mux, http.MethodGet, "/"+string(p), s.probe(p))
		s.handle(mux, http.MethodGet, "/"+string(p)+"/{check...}", s.probeCheck(p))
	}
	if s.cfg.Metrics != nil {
		s.handle(mux, http.MethodGet, "/metrics", s.cfg.Metrics.ServeHTTP)
	}
	if s.cfg.Status != nil {
		for _, pattern := range []string{"/{$}", "/status", "/status/"} {
			s.handle(mux, http.MethodGet, pattern, s.cfg.Status.ServeHTTP)
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErrorStatus(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
}

// handle registers h for one method on pattern. Patterns carry no method so
// that a wrong method gets our JSON 405 instead of ServeMux's plain text.
// GET routes also answer HEAD.
func (s *server) handle(mux *http.ServeMux, method, pattern string, h http.HandlerFunc) {
	allow := method
	if method == http.MethodGet {
		allow = "GET, HEAD"
	}
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", allow)
			writeErrorStatus(w, http.StatusMethodNotAllowed,
				"method "+r.Method+" is not allowed on "+r.URL.Path+"; use "+method)
			return
		}
		h(w, r)
	})
}

// snapshot returns the current snapshot; before the health engine has
// published one, an empty snapshot stands in (live, not ready, not started).
func (s *server) snapshot() *health.Snapshot {
	if snap := s.health.Snapshot(); snap != nil {
		return snap
	}
	return &health.Snapshot{}
}
