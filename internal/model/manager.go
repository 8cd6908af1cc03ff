// Package model is the model manager: it finds models in the repository,
// loads and unloads their versions, owns each version's queue and instances,
// and reports every lifecycle step to the health engine. It is the core the
// REST and gRPC front ends share, and it carries out the health engine's
// decisions (it implements health.Actuator).
package model

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/execenv"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/repository"
	"github.com/vigilhq/vigil/internal/scheduler"
	"github.com/vigilhq/vigil/internal/sequence"
)

// ControlMode is the model control mode.
type ControlMode string

// The model control modes.
const (
	ModeNone     ControlMode = "none"
	ModeExplicit ControlMode = "explicit"
	ModePoll     ControlMode = "poll"
)

// EventSink receives lifecycle and instance events: the health engine.
type EventSink interface {
	Post(ev health.Event)
}

// HealthSource gives the current health snapshot: the health engine.
type HealthSource interface {
	Snapshot() *health.Snapshot
	// Sync waits until the snapshot reflects every event posted so far.
	Sync(ctx context.Context) error
}

// Config configures the manager.
type Config struct {
	RepoDir string
	Mode    ControlMode
	// StartupModels are loaded at start in explicit mode (--load-model).
	StartupModels []string
	// Defaults is the server-wide health policy health.yaml overlays.
	Defaults health.Policy
	Runtime  instance.Runtime
	// RuntimeErr, when set, is why no model can load (no usable
	// interpreter); every load fails with it as the reason, unless
	// RecheckRuntime, called first by each load, now returns nil.
	RuntimeErr     error
	RecheckRuntime func(ctx context.Context) error
	Events         EventSink
	Health         HealthSource
	Logger         *slog.Logger
	// FinalizeTimeout bounds each instance's finalize() on unload;
	// StopGrace is the time between SIGTERM and SIGKILL.
	FinalizeTimeout time.Duration
	StopGrace       time.Duration
	// HideReasons keeps health reasons (which may name files and carry
	// exception text) out of inference errors, as --health-hide-reasons
	// keeps them out of the health endpoints.
	HideReasons bool
	// DrainTimeout bounds how long an unload, reload or shutdown waits for
	// batches in flight before it stops their instances (default 30 s).
	DrainTimeout time.Duration
	// MaxQueue bounds each version's queue (0 = unbounded).
	MaxQueue int
	// MaxElements bounds the element count of one input tensor (0 = no
	// limit).
	MaxElements int64
	// MaxStreamDuration bounds how long an instance holds one request
	// (--max-stream-duration; 0 = instance.DefaultMaxStreamDuration).
	MaxStreamDuration time.Duration
	// LoadConcurrency bounds parallel loads at start-up.
	LoadConcurrency int
	// Metrics registers the inference metrics; nil keeps them unexported.
	Metrics prometheus.Registerer
	// AutoComplete runs models' auto_complete_config and lets models
	// without config.pbtxt load (Triton's default; off is
	// --disable-auto-complete-config).
	AutoComplete bool
	// ScratchDir holds the files of load requests with file: overrides
	// (default: a directory under the system's temporary directory).
	ScratchDir string
	// EnvCacheDir is where EXECUTION_ENV_PATH tarballs are unpacked, one
	// directory per content (default: vigil-envs in the system's
	// temporary directory).
	EnvCacheDir string
	// Observer, when set, gives each model version an observer of its
	// successful requests' times (Triton's latency summaries); nil or a nil
	// result observes nothing.
	Observer func(model, version string) scheduler.Observer
	// NewInstance builds a model instance; nil means instance.New. Tests
	// set a fake.
	NewInstance func(instance.Config) Instance
}

// Manager owns every loaded model version.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	// closing ends when Close begins: loads still running then are
	// cancelled, so that their callers are answered before shutdown ends.
	closing     context.Context
	stopLoading context.CancelFunc
	loading     inflight // loads under way

	runtimeMu  sync.Mutex
	runtimeErr error // see runtimeError

	mu     sync.RWMutex
	models map[string]*entry
	// live holds every instance of every version, loading, serving or
	// being replaced: the health engine's decisions reach them through it.
	live map[health.InstanceKey]*version

	envs *execenv.Cache // models' EXECUTION_ENV_PATH tarballs, unpacked

	skippedMu sync.Mutex
	skipped   map[string]string // repository folders that are not models, and why (logSkipped)

	datatypes *datatypeWarnings // outputs passed through with another datatype than declared
}

// entry is one model name. op serializes its loads and unloads.
type entry struct {
	op sync.Mutex
	// loads counts this model's loads (guarded by op); a rolling reload
	// names its instances after it, so that old and new instances can
	// coexist in the health engine.
	loads int

	// overrideDir holds the files of the load request the model serves
	// with (file: overrides); "" when it serves its own. Guarded by op.
	overrideDir string

	// explicit is set while the model is loaded by name (the repository
	// API, --load-model, start-up); alongWith lists the ensembles whose
	// load loaded it (unload_dependents reads both). Guarded by op.
	explicit  bool
	alongWith []string

	// Guarded by Manager.mu.
	spec     *modelconfig.Model
	versions map[string]*version
}

// version is one loaded model version.
type version struct {
	key          health.ModelKey
	drainTimeout time.Duration // how long stop waits for batches in flight
	spec         *modelconfig.Model
	number       int64
	queue        *scheduler.Queue
	// seq is the sequence batcher of a sequence_batching model, which its
	// instances pull from instead of queue; nil for other models.
	seq          *sequence.Batcher
	order        *scheduler.Ordering // preserve_ordering; nil without it
	stats        *scheduler.Stats
	instances    []Instance
	loadDuration time.Duration // set once, before the version is published in its entry

	mu      sync.Mutex
	serving bool // loaded: restarts are carried out
	closed  bool // unloading or replaced: restarts are moot
	// restarts holds the restarts the health engine decided while the
	// version was still loading, by instance name: they are carried out
	// when it starts serving (setServing), never dropped.
	restarts map[string]string
}

// New returns a manager; it loads nothing.
func New(cfg Config) *Manager {
	if cfg.LoadConcurrency <= 0 {
		cfg.LoadConcurrency = 4
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	closing, stop := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, log: cfg.Logger, closing: closing, runtimeErr: cfg.RuntimeErr, stopLoading: stop, metrics: newMetrics(cfg.Metrics), models: map[string]*entry{}, live: map[health.InstanceKey]*version{}}
	m.envs = execenv.NewCache(m.envCacheDir(), cfg.Logger)
	m.datatypes = newDatatypeWarnings(cfg.Logger)
	return m
}

// StartupModels lists the models to load at start-up for the control mode.
func (m *Manager) StartupModels() ([]string, error) {
	if m.cfg.Mode == ModeExplicit {
		return m.cfg.StartupModels, nil
	}
	return repository.Scan(m.cfg.RepoDir)
}

// PlanStartup lists the start-up models and tells the health engine, so
// that readiness reports "loading k/n" from the first probe on; it returns
// once the engine shows the plan.
func (m *Manager) PlanStartup(ctx context.Context) []string {
	m.warnAboutRepository()
	names, err := m.StartupModels()
	if err != nil {
		m.log.Error("cannot scan the model repository", "repository", m.cfg.RepoDir, "err", err)
	}
	m.cfg.Events.Post(health.Event{Kind: health.StartupPlanned, At: time.Now(), Instances: names})
	_ = m.cfg.Health.Sync(ctx)
	return names
}

// LoadStartup loads the start-up models (from PlanStartup), several at a time, and reports
// StartupComplete once every load has finished, whatever its outcome.
func (m *Manager) LoadStartup(ctx context.Context, names []string) {
	sem := make(chan struct{}, m.cfg.LoadConcurrency)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := m.load(ctx, name); err != nil {
				m.log.Error("model failed to load", "model", name, "err", err)
			}
			m.markExplicit(name)
		}()
	}
	wg.Wait()
	m.cfg.Events.Post(health.Event{Kind: health.StartupComplete, At: time.Now()})
}

// Load loads (or reloads) a model: the repository API.
//
// params are Triton's load parameters: "config" (a ModelConfig as JSON)
// replaces config.pbtxt for this load, and "file:<path>" parameters (which
// need "config") replace the model directory with the files they carry.
// Any other parameter is refused.
func (m *Manager) Load(ctx context.Context, name string, params map[string]any) error {
	if m.cfg.Mode == ModeNone {
		return apierr.New(apierr.Unavailable, "explicit model load / unload is not allowed if polling is enabled: cannot load model %s in model control mode none (start with --model-control-mode explicit)", name)
	}
	if err := repository.ValidName(name); err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "cannot load model %q", name)
	}
	ov, err := m.loadOverride(name, params)
	if err != nil {
		return err
	}
	if (ov == nil || ov.Dir == "") && !m.inRepository(name) {
		// Triton's words for a model its repository does not hold.
		return apierr.New(apierr.NotFound, "failed to load '%s', failed to poll from model repository: no model directory %s in %s (a directory with %s or an auto-completable <version>/model.py)",
			name, name, m.cfg.RepoDir, modelconfig.ConfigFileName)
	}
	err = m.loadWith(ctx, name, ov)
	m.markExplicit(name)
	// Return only once readiness tells the outcome.
	_ = m.cfg.Health.Sync(ctx)
	return err
}

// inRepository reports whether the repository holds a model of that name.
func (m *Manager) inRepository(name string) bool {
	return repository.IsModel(m.cfg.RepoDir, name)
}

// Unload unloads every version of a model: the repository API. With the
// parameter unload_dependents, an ensemble's step models that were loaded
// only along with it go too.
func (m *Manager) Unload(ctx context.Context, name string, params map[string]any) error {
	if m.cfg.Mode == ModeNone {
		return apierr.New(apierr.Unavailable, "explicit model load / unload is not allowed if polling is enabled: cannot unload model %s in model control mode none (start with --model-control-mode explicit)", name)
	}
	if err := repository.ValidName(name); err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "cannot unload model %q", name)
	}
	dependents, err := unloadDependentsParam(name, params)
	if err != nil {
		return err
	}
	e := m.lookup(name)
	if e == nil {
		if m.inRepository(name) {
			return nil // known but not loaded: nothing to do, as in Triton
		}
		return apierr.New(apierr.NotFound, "cannot unload model %s: it is neither loaded nor in the repository", name)
	}
	e.op.Lock()
	defer e.op.Unlock()
	e.explicit, e.alongWith = false, nil
	m.mu.Lock()
	old := e.versions
	e.versions = nil
	spec := e.spec
	m.mu.Unlock()
	m.stopVersions(ctx, old, "unloaded")
	m.swapOverride(e, nil)
	// Versions that failed to load have no instances but still count for
	// strict readiness until they are unloaded too.
	for _, mh := range m.cfg.Health.Snapshot().Models {
		if mh.Name == name && mh.Expected {
			if _, stopped := old[mh.Version]; !stopped {
				m.cfg.Events.Post(health.Event{Kind: health.ModelUnloaded, At: time.Now(),
					Instance: health.InstanceKey{Model: name, Version: mh.Version}, Reason: "unloaded"})
			}
		}
	}
	_ = m.cfg.Health.Sync(ctx)
	if dependents {
		return m.unloadDependents(ctx, spec)
	}
	return nil
}

// unloadDependentsParam reads unload's parameters: unload_dependents (a
// bool) is the only one.
func unloadDependentsParam(name string, params map[string]any) (bool, error) {
	var on bool
	for k, v := range params {
		if k != "unload_dependents" {
			return false, apierr.New(apierr.InvalidArgument, "cannot unload model %s: unknown parameter %q (unload takes only unload_dependents)", name, k)
		}
		b, ok := v.(bool)
		if !ok {
			return false, apierr.New(apierr.InvalidArgument, "Unable to parse 'unload_dependents': want a bool, got %v", v)
		}
		on = b
	}
	return on, nil
}

// markExplicit records that name was loaded by name.
func (m *Manager) markExplicit(name string) {
	if e := m.lookup(name); e != nil {
		e.op.Lock()
		e.explicit = true
		e.op.Unlock()
	}
}

// Close unloads everything; the server is shutting down. Versions stay
// known to the health engine as stopped.
func (m *Manager) Close(ctx context.Context) {
	m.stopLoading()
	// Cancelled loads stop what they started; give them the time a stop
	// takes, whatever ctx allows the running batches.
	select {
	case <-m.loading.idle():
	case <-time.After(m.cfg.FinalizeTimeout + 5*time.Second):
		m.log.Warn("loads still stopping at shutdown")
	}
	m.mu.Lock()
	var all []*version
	for _, e := range m.models {
		for _, v := range e.versions {
			all = append(all, v)
		}
	}
	m.mu.Unlock()
	m.retire(ctx, slices.Values(all))
}

func (m *Manager) lookup(name string) *entry {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.models[name]
}

func (m *Manager) entryFor(name string) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.models[name]
	if e == nil {
		e = &entry{}
		m.models[name] = e
	}
	return e
}

// resolve finds the version a request names. An empty version picks the
// version the health snapshot's rule picks (Snapshot.Model).
func (m *Manager) resolve(name, ver string) (*version, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := apierr.CheckVersionString(ver); err != nil {
		return nil, err
	}
	e := m.models[name]
	if e == nil {
		return nil, apierr.UnknownModel(name)
	}
	if len(e.versions) == 0 {
		reason := "it is not loaded"
		if _, r, ok := m.cfg.Health.Snapshot().ModelReady(name, ver); ok && r != "" && !m.cfg.HideReasons {
			reason = r
		}
		reason = fmt.Sprintf("model %s is not ready: %s", name, reason)
		if ver != "" {
			return nil, apierr.VersionNotReady(name, ver, reason)
		}
		return nil, apierr.NoAvailableVersions(name, reason)
	}
	if ver != "" {
		v := e.versions[ver]
		if v == nil {
			return nil, apierr.UnknownVersion(name, ver)
		}
		return v, nil
	}
	// The version the health snapshot names for the model (Snapshot.Model:
	// the highest ready version, else the highest expected one), so that a
	// versionless request goes where versionless readiness points; a
	// version the snapshot does not know yet, the highest loaded.
	if mh, ok := m.cfg.Health.Snapshot().Model(name, ""); ok {
		if v := e.versions[mh.Version]; v != nil {
			return v, nil
		}
	}
	var best *version
	for _, v := range e.versions {
		if best == nil || v.number > best.number {
			best = v
		}
	}
	return best, nil
}

// inflight counts operations under way; unlike a WaitGroup, it may be
// waited on while new operations start.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0
}

func (f *inflight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.zero = make(chan struct{})
	}
	f.n++
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.zero)
	}
}

// idle is closed once no operation is under way.
func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return f.zero
}
