// Package model is the model manager: it finds models in the repository,
// loads and unloads their versions, owns each version's queue and instances,
// and reports every lifecycle step to the health engine. It is the core the
// REST and gRPC front ends share, and it carries out the health engine's
// decisions (it implements health.Actuator).
package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/repository"
	"github.com/vigilhq/vigil/internal/scheduler"
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
	// interpreter); every load fails with it as the reason.
	RuntimeErr error
	Events     EventSink
	Health     HealthSource
	Logger     *slog.Logger
	// FinalizeTimeout bounds each instance's finalize() on unload;
	// StopGrace is the time between SIGTERM and SIGKILL.
	FinalizeTimeout time.Duration
	StopGrace       time.Duration
	// MaxQueue bounds each version's queue (0 = unbounded).
	MaxQueue int
	// MaxElements bounds the element count of one input tensor (0 = no
	// limit).
	MaxElements int64
	// LoadConcurrency bounds parallel loads at start-up.
	LoadConcurrency int
	// Metrics registers the inference metrics; nil keeps them unexported.
	Metrics prometheus.Registerer
}

// Manager owns every loaded model version.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu     sync.RWMutex
	models map[string]*entry
	// live holds every instance of every version, loading, serving or
	// being replaced: the health engine's decisions reach them through it.
	live map[health.InstanceKey]*version
}

// entry is one model name. op serializes its loads and unloads.
type entry struct {
	op sync.Mutex
	// loads counts this model's loads (guarded by op); a rolling reload
	// names its instances after it, so that old and new instances can
	// coexist in the health engine.
	loads int

	// Guarded by Manager.mu.
	spec     *modelconfig.Model
	versions map[string]*version
}

// version is one loaded model version.
type version struct {
	key       health.ModelKey
	spec      *modelconfig.Model
	number    int64
	queue     *scheduler.Queue
	stats     *scheduler.Stats
	instances []*instance.Instance

	mu       sync.Mutex
	serving  bool // loaded: restarts are carried out
	routable map[string]bool
}

// New returns a manager; it loads nothing.
func New(cfg Config) *Manager {
	if cfg.LoadConcurrency <= 0 {
		cfg.LoadConcurrency = 4
	}
	return &Manager{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Metrics), models: map[string]*entry{}, live: map[health.InstanceKey]*version{}}
}

// StartupModels lists the models to load at start-up for the control mode.
func (m *Manager) StartupModels() ([]string, error) {
	if m.cfg.Mode == ModeExplicit {
		return m.cfg.StartupModels, nil
	}
	return repository.Scan(m.cfg.RepoDir)
}

// LoadStartup loads the start-up models, several at a time, and reports
// StartupComplete once every load has finished, whatever its outcome.
func (m *Manager) LoadStartup(ctx context.Context) {
	names, err := m.StartupModels()
	if err != nil {
		m.log.Error("cannot scan the model repository", "repository", m.cfg.RepoDir, "err", err)
	}
	m.cfg.Events.Post(health.Event{Kind: health.StartupPlanned, At: time.Now(), Instances: names})
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
		}()
	}
	wg.Wait()
	m.cfg.Events.Post(health.Event{Kind: health.StartupComplete, At: time.Now()})
}

// Load loads (or reloads) a model: the repository API.
func (m *Manager) Load(ctx context.Context, name string, _ map[string]any) error {
	if m.cfg.Mode == ModeNone {
		return apierr.New(apierr.Unsupported, "cannot load model %s: explicit model load / unload is not allowed in model control mode none", name)
	}
	if err := repository.ValidName(name); err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "cannot load model %q", name)
	}
	if !m.inRepository(name) {
		return apierr.New(apierr.NotFound, "cannot load model %s: no %s in %s", name,
			filepath.Join(name, modelconfig.ConfigFileName), m.cfg.RepoDir)
	}
	err := m.load(ctx, name)
	// Return only once readiness tells the outcome.
	_ = m.cfg.Health.Sync(ctx)
	return err
}

// inRepository reports whether the repository holds a model of that name.
func (m *Manager) inRepository(name string) bool {
	_, err := os.Stat(filepath.Join(m.cfg.RepoDir, name, modelconfig.ConfigFileName))
	return err == nil
}

// Unload unloads every version of a model: the repository API.
func (m *Manager) Unload(ctx context.Context, name string, _ map[string]any) error {
	if m.cfg.Mode == ModeNone {
		return apierr.New(apierr.Unsupported, "cannot unload model %s: explicit model load / unload is not allowed in model control mode none", name)
	}
	if err := repository.ValidName(name); err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "cannot unload model %q", name)
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
	m.mu.Lock()
	old := e.versions
	e.versions = nil
	m.mu.Unlock()
	m.stopVersions(ctx, old, "unloaded")
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
	return nil
}

// Close unloads everything; the server is shutting down. Versions stay
// known to the health engine as stopped.
func (m *Manager) Close(ctx context.Context) {
	m.mu.Lock()
	var all []map[string]*version
	for _, e := range m.models {
		all = append(all, e.versions)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, vs := range all {
		for _, v := range vs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v.stop(ctx)
			}()
		}
	}
	wg.Wait()
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

// load reads a model's configuration, starts every selected version's
// instances and waits for their initialize. A version starts serving only
// when all of its instances initialized; on any failure the whole load
// fails, its instances stop, and the model is UNAVAILABLE with the reason.
// A reload replaces the versions that were serving once the new ones are up.
func (m *Manager) load(ctx context.Context, name string) error {
	e := m.entryFor(name)
	e.op.Lock()
	defer e.op.Unlock()

	spec, err := m.readSpec(name)
	if err != nil {
		m.cfg.Events.Post(health.Event{Kind: health.ModelLoading, At: time.Now(), Instance: health.InstanceKey{Model: name}, Expected: true})
		m.cfg.Events.Post(health.Event{Kind: health.ModelLoadFailed, At: time.Now(), Instance: health.InstanceKey{Model: name}, Reason: err.Error()})
		return apierr.Wrap(apierr.Internal, err, "failed to load model %s", name)
	}

	m.mu.RLock()
	old := e.versions
	m.mu.RUnlock()
	e.loads++
	if canRoll(old, spec) {
		return m.rollingReload(ctx, e, old, spec)
	}
	// Any other reload stops the old versions first: the health engine
	// starts each version over on ModelLoading.
	if len(old) > 0 {
		m.mu.Lock()
		e.versions = nil
		m.mu.Unlock()
		m.stopVersions(ctx, old, "reloading")
	}

	versions := make(map[string]*version, len(spec.Versions))
	for _, n := range spec.Versions {
		v := m.newVersion(spec, n, e.loads)
		versions[v.key.Version] = v
		m.register(v)
		names := make([]string, len(v.instances))
		for i, in := range v.instances {
			names[i] = in.Key().Instance
		}
		policy := spec.Policy
		m.cfg.Events.Post(health.Event{Kind: health.ModelLoading, At: time.Now(),
			Instance:  health.InstanceKey{Model: name, Version: v.key.Version},
			Instances: names, Policy: &policy, Expected: true})
	}

	if err := m.startAll(ctx, versions); err != nil {
		m.stopFailedLoad(context.WithoutCancel(ctx), versions)
		for _, v := range versions {
			m.cfg.Events.Post(health.Event{Kind: health.ModelLoadFailed, At: time.Now(),
				Instance: health.InstanceKey{Model: name, Version: v.key.Version}, Reason: err.Error()})
		}
		return apierr.Wrap(apierr.Internal, err, "failed to load model %s", name)
	}

	m.mu.Lock()
	e.spec = spec
	e.versions = versions
	m.mu.Unlock()
	for _, v := range versions {
		v.setServing(true)
		m.cfg.Events.Post(health.Event{Kind: health.ModelLoaded, At: time.Now(),
			Instance: health.InstanceKey{Model: name, Version: v.key.Version}})
	}
	m.log.Info("model loaded", "model", name, "versions", len(versions))
	return nil
}

// canRoll reports whether a reload can replace instances while the old
// ones serve: the same versions with the same health policy. Anything else
// is a new load.
func canRoll(old map[string]*version, spec *modelconfig.Model) bool {
	if len(old) == 0 || len(old) != len(spec.Versions) {
		return false
	}
	for _, n := range spec.Versions {
		v := old[strconv.FormatInt(n, 10)]
		if v == nil || !reflect.DeepEqual(v.spec.Policy, spec.Policy) {
			return false
		}
	}
	return true
}

// rollingReload starts a new set of instances beside the serving ones,
// switches traffic to them once all have initialized, lets the old ones
// finish what they were given, and stops them. The versions stay READY
// throughout; if the new instances fail, the old ones keep serving.
func (m *Manager) rollingReload(ctx context.Context, e *entry, old map[string]*version, spec *modelconfig.Model) error {
	name := spec.Name
	versions := make(map[string]*version, len(old))
	for _, n := range spec.Versions {
		v := m.newVersion(spec, n, e.loads)
		versions[v.key.Version] = v
		m.register(v)
	}
	if err := m.startAll(ctx, versions); err != nil {
		m.stopFailedLoad(context.WithoutCancel(ctx), versions)
		m.forget(versions)
		m.log.Error("reload failed; the loaded model keeps serving", "model", name, "err", err)
		return apierr.Wrap(apierr.Internal, err, "failed to reload model %s (the loaded version keeps serving)", name)
	}
	m.mu.Lock()
	e.spec = spec
	e.versions = versions
	m.mu.Unlock()
	for _, v := range versions {
		v.setServing(true)
	}
	for _, v := range old {
		v.drain(ctx)
	}
	m.stopFailedLoad(context.WithoutCancel(ctx), old)
	m.forget(old)
	m.log.Info("model reloaded", "model", name, "versions", len(versions))
	return nil
}

// startAll starts every instance of versions and waits for initialize.
func (m *Manager) startAll(ctx context.Context, versions map[string]*version) error {
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for _, v := range versions {
		for _, in := range v.instances {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := in.Start(ctx); err != nil {
					select {
					case errs <- fmt.Errorf("instance %s: %w", in.Key().Instance, err):
					default:
					}
				}
			}()
		}
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// register makes a version's instances reachable by the health engine.
func (m *Manager) register(v *version) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, in := range v.instances {
		m.live[in.Key()] = v
	}
}

// unregister undoes register.
func (m *Manager) unregister(v *version) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, in := range v.instances {
		if m.live[in.Key()] == v {
			delete(m.live, in.Key())
		}
	}
}

// forget tells the health engine that replaced instances are gone.
func (m *Manager) forget(vs map[string]*version) {
	for _, v := range vs {
		for _, in := range v.instances {
			m.cfg.Events.Post(health.Event{Kind: health.InstanceRemoved, At: time.Now(), Instance: in.Key()})
		}
	}
}

// readSpec loads and checks a model's configuration.
func (m *Manager) readSpec(name string) (*modelconfig.Model, error) {
	if m.cfg.RuntimeErr != nil {
		return nil, m.cfg.RuntimeErr
	}
	return modelconfig.Load(m.cfg.RepoDir, name, m.cfg.Defaults)
}

// newVersion builds a version's queue and instances. Instances of the
// model's first load are named as the configuration names them; later
// loads add "-r<load>".
func (m *Manager) newVersion(spec *modelconfig.Model, n int64, load int) *version {
	vs := strconv.FormatInt(n, 10)
	cfg := spec.Config
	b := scheduler.Batching{MaxBatchSize: int(cfg.GetMaxBatchSize()), MaxQueue: m.cfg.MaxQueue}
	if db := cfg.GetDynamicBatching(); db != nil && b.MaxBatchSize > 0 {
		b.Dynamic = true
		b.MaxDelay = time.Duration(db.GetMaxQueueDelayMicroseconds()) * time.Microsecond
	}
	stats := &scheduler.Stats{}
	v := &version{
		key:      health.ModelKey{Model: spec.Name, Version: vs},
		spec:     spec,
		number:   n,
		stats:    stats,
		queue:    scheduler.NewQueue(spec.Name+" version "+vs, b, stats),
		routable: map[string]bool{},
	}
	configJSON, err := modelconfig.ToJSON(cfg)
	if err != nil {
		configJSON = []byte("{}")
	}
	for _, inName := range spec.InstanceNames() {
		if load > 1 {
			inName = fmt.Sprintf("%s-r%d", inName, load)
		}
		key := health.InstanceKey{Model: spec.Name, Version: vs, Instance: inName}
		v.instances = append(v.instances, instance.New(instance.Config{
			Key:     key,
			Runtime: m.cfg.Runtime,
			Init: ipc.InitArgs{
				ModelFile:       spec.ModelFile(n),
				ModelName:       spec.Name,
				ModelVersion:    vs,
				ModelRepository: spec.Dir,
				InstanceName:    inName,
				InstanceKind:    "CPU",
				ModelConfigJSON: string(configJSON),
			},
			Policy:          spec.Policy,
			Queue:           v.queue,
			Stats:           stats,
			Events:          m.cfg.Events,
			Logger:          m.log.With("model", spec.Name, "version", vs),
			FinalizeTimeout: m.cfg.FinalizeTimeout,
			StopGrace:       m.cfg.StopGrace,
		}))
	}
	return v
}

// stopVersions takes versions out of service and stops their instances.
func (m *Manager) stopVersions(ctx context.Context, vs map[string]*version, reason string) {
	var wg sync.WaitGroup
	for _, v := range vs {
		m.cfg.Events.Post(health.Event{Kind: health.ModelUnloading, At: time.Now(),
			Instance: health.InstanceKey{Model: v.key.Model, Version: v.key.Version}, Reason: reason})
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.stop(ctx)
			m.unregister(v)
			m.cfg.Events.Post(health.Event{Kind: health.ModelUnloaded, At: time.Now(),
				Instance: health.InstanceKey{Model: v.key.Model, Version: v.key.Version}, Reason: reason})
		}()
	}
	wg.Wait()
}

// stopFailedLoad stops the instances of versions whose load failed; their
// lifecycle ends in ModelLoadFailed, not in an unload.
func (m *Manager) stopFailedLoad(ctx context.Context, vs map[string]*version) {
	var wg sync.WaitGroup
	for _, v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.stop(ctx)
			m.unregister(v)
		}()
	}
	wg.Wait()
}

func (v *version) setServing(serving bool) {
	v.mu.Lock()
	v.serving = serving
	v.mu.Unlock()
}

// drain waits, within ctx and at most drainLimit, until the version's
// queue is empty: requests that reached it before traffic moved on are
// served by its own instances. Requests that arrive after it closes are
// retried on the version that replaced it.
func (v *version) drain(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, drainLimit)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for v.queue.Len() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// drainLimit bounds how long a replaced version serves its queue.
const drainLimit = 30 * time.Second

// errReplaced closes the queue of a version a reload replaced.
var errReplaced = errors.New("model version was replaced by a reload")

// stop closes the version's queue and stops its instances.
func (v *version) stop(ctx context.Context) {
	v.mu.Lock()
	v.serving = false
	v.mu.Unlock()
	v.queue.Close(&apierr.Error{Code: apierr.Unavailable, RetryAfter: time.Second, Err: errReplaced,
		Msg: fmt.Sprintf("model %s version %s is unloading", v.key.Model, v.key.Version)})
	var wg sync.WaitGroup
	for _, in := range v.instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.Stop(ctx)
		}()
	}
	wg.Wait()
}

// resolve finds the version a request names. An empty version picks the
// highest version with a routable instance, else the highest.
func (m *Manager) resolve(name, ver string) (*version, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e := m.models[name]
	if e == nil {
		return nil, apierr.New(apierr.NotFound, "unknown model %q", name)
	}
	if len(e.versions) == 0 {
		reason := "it is not loaded"
		if _, r, ok := m.cfg.Health.Snapshot().ModelReady(name, ver); ok && r != "" {
			reason = r
		}
		return nil, apierr.Unavailablef("model %s is not ready: %s", name, reason)
	}
	if ver != "" {
		v := e.versions[ver]
		if v == nil {
			return nil, apierr.New(apierr.NotFound, "unknown version %q of model %s", ver, name)
		}
		return v, nil
	}
	var all []*version
	for _, v := range e.versions {
		all = append(all, v)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].number > all[j].number })
	for _, v := range all {
		if v.routableCount() > 0 {
			return v, nil
		}
	}
	return all[0], nil
}

func (v *version) routableCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, r := range v.routable {
		if r {
			n++
		}
	}
	return n
}
