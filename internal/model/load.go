package model

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/scheduler"
)

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
	if err != nil && m.serving(e) {
		// A broken edit of a model that is serving: the loaded versions keep
		// serving and readiness keeps saying so; the error goes to the
		// caller and the log.
		m.log.Error("reload failed; the loaded model keeps serving", "model", name, "err", err)
		return apierr.Wrap(apierr.InvalidArgument, err, "cannot reload model %s (the loaded version keeps serving)", name)
	}
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

// serving reports whether a model has loaded versions.
func (m *Manager) serving(e *entry) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(e.versions) > 0
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

