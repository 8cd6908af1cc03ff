package model

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/execenv"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// load reads a model's configuration, starts every selected version's
// instances and waits for their initialize. A version serves only once all
// of its instances initialized.
//
// A first load that fails leaves the model UNAVAILABLE with the reason. A
// reload never takes down what serves: new instances start beside the
// serving ones (a version whose health policy is unchanged keeps its place in
// the health engine and stays READY; a new version loads under its own
// key), traffic moves when every one of them has initialized, and only then
// do the replaced and deselected versions drain and stop. If the reload
// fails, the loaded versions keep serving.
func (m *Manager) load(ctx context.Context, name string) error {
	return m.loadWith(ctx, name, nil)
}

// loadWith is load with the overrides of a repository load request (nil:
// the model's own files).
func (m *Manager) loadWith(ctx context.Context, name string, ov *modelconfig.Override) error {
	m.loading.add()
	defer m.loading.done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.closing, cancel)()
	err := m.loadLocked(ctx, name, ov)
	if err != nil && m.closing.Err() != nil {
		return apierr.Unavailablef("cannot load model %s: the server is shutting down", name)
	}
	return err
}

// loadLocked is load with the model's operation lock taken here.
func (m *Manager) loadLocked(ctx context.Context, name string, ov *modelconfig.Override) error {
	e := m.entryFor(name)
	e.op.Lock()
	defer e.op.Unlock()
	started := time.Now()
	// Files a load request brought serve only if the load succeeds; the
	// ones the previous load brought go once their versions are gone.
	committed := false
	defer func() {
		if !committed && ov != nil && ov.Dir != "" {
			removeOverride(ov.Dir)
		}
	}()

	m.mu.RLock()
	old := e.versions
	m.mu.RUnlock()
	reload := len(old) > 0

	spec, rt, err := m.readSpec(ctx, name, ov)
	if err == nil && spec.Ensemble != nil {
		err = m.prepareEnsemble(ctx, spec)
	}
	if err != nil {
		if reload {
			m.log.Error("reload failed; the loaded model keeps serving", "model", name, "err", err)
			return apierr.Wrap(apierr.InvalidArgument, err, "failed to load '%s' (a reload: the loaded version keeps serving)", name)
		}
		// The configuration names no versions: the error stands for the
		// model as a whole, under version "".
		key := health.InstanceKey{Model: name}
		m.cfg.Events.Post(health.Event{Kind: health.ModelLoading, At: time.Now(), Instance: key, Expected: true})
		m.cfg.Events.Post(health.Event{Kind: health.ModelLoadFailed, At: time.Now(), Instance: key, Reason: err.Error()})
		code := apierr.Internal
		var cfgErr *modelconfig.Error
		var envErr *execenv.Error
		var apiErr *apierr.Error
		switch {
		case errors.As(err, &cfgErr), errors.As(err, &envErr):
			code = apierr.InvalidArgument // the model's files are wrong, as on a reload
		case errors.As(err, &apiErr):
			code = apiErr.Code
		}
		return apierr.LoadFailed(code, err, name)
	}
	// A configuration error from an earlier attempt no longer applies.
	m.cfg.Events.Post(health.Event{Kind: health.ModelForgotten, At: time.Now(), Instance: health.InstanceKey{Model: name}})

	e.loads++
	versions := make(map[string]*version, len(spec.Versions))
	fresh := map[string]bool{} // versions the health engine (re)starts from LOADING
	for _, n := range spec.Versions {
		v := m.newVersion(spec, rt, n, e.loads)
		key := v.key.Version
		versions[key] = v
		if ov := old[key]; ov != nil && !reflect.DeepEqual(ov.spec.Policy, spec.Policy) {
			// The version's policy changed: the engine must start it over,
			// so the old instances go first (the only reload with a gap).
			m.stopVersions(ctx, map[string]*version{key: ov}, "reloading with a new health policy")
			m.mu.Lock()
			delete(e.versions, key)
			m.mu.Unlock()
		}
		m.register(v)
		m.mu.RLock()
		_, replacing := e.versions[key]
		m.mu.RUnlock()
		if replacing {
			continue // new instances join the serving version's tracker
		}
		fresh[key] = true
		names := make([]string, len(v.instances))
		for i, in := range v.instances {
			names[i] = in.Key().Instance
		}
		policy := spec.Policy
		m.cfg.Events.Post(health.Event{Kind: health.ModelLoading, At: time.Now(),
			Instance:  health.InstanceKey{Model: name, Version: key},
			Instances: names, Policy: &policy, Deps: dependencies(spec),
			// A first load that fails keeps strict readiness false, as in
			// Triton; a reload's new version counts once it has loaded.
			Expected: !reload})
	}

	if err := m.startAll(ctx, versions); err != nil {
		m.retire(context.WithoutCancel(ctx), maps.Values(versions))
		for key, v := range versions {
			if fresh[key] {
				m.cfg.Events.Post(health.Event{Kind: health.ModelLoadFailed, At: time.Now(),
					Instance: health.InstanceKey{Model: name, Version: key}, Reason: err.Error()})
			} else {
				m.forget(map[string]*version{key: v})
			}
		}
		if m.serving(e) {
			m.log.Error("reload failed; the loaded model keeps serving", "model", name, "err", err)
			return apierr.Wrap(apierr.Internal, err, "failed to load '%s' (a reload: the loaded version keeps serving)", name)
		}
		return apierr.LoadFailed(apierr.Internal, err, name)
	}

	// The engine puts initialized instances in traffic; wait for it, so
	// that traffic moves to queues that have routable instances.
	_ = m.cfg.Health.Sync(ctx)
	took := time.Since(started)
	for _, v := range versions {
		v.loadDuration = took // before the versions are published below
	}
	m.mu.Lock()
	e.spec = spec
	previous := e.versions
	e.versions = versions
	m.mu.Unlock()
	for key, v := range versions {
		v.setServing(true)
		if fresh[key] {
			m.cfg.Events.Post(health.Event{Kind: health.ModelLoaded, At: time.Now(),
				Instance: health.InstanceKey{Model: name, Version: key}})
		}
	}
	// Traffic has moved: the old versions finish what they were given.
	replaced, deselected := map[string]*version{}, map[string]*version{}
	for key, ov := range previous {
		ov.drain(ctx)
		if _, kept := versions[key]; kept {
			replaced[key] = ov
		} else {
			deselected[key] = ov
		}
	}
	m.retire(context.WithoutCancel(ctx), maps.Values(replaced))
	m.forget(replaced)
	if len(deselected) > 0 {
		m.stopVersions(context.WithoutCancel(ctx), deselected, "unloaded: no longer selected by the version policy")
	}
	committed = true
	m.swapOverride(e, ov)
	if reload {
		m.log.Info("model reloaded", "model", name, "versions", len(versions))
	} else {
		m.log.Info("model loaded", "model", name, "versions", len(versions))
	}
	return nil
}

// serving reports whether a model has loaded versions.
func (m *Manager) serving(e *entry) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(e.versions) > 0
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

// readSpec loads and checks a model's configuration, auto-completed and
// with a load request's overrides, and the runtime its stubs start with
// (its EXECUTION_ENV_PATH's interpreter, or the server's).
func (m *Manager) readSpec(ctx context.Context, name string, ov *modelconfig.Override) (*modelconfig.Model, instance.Runtime, error) {
	if err := m.runtimeError(ctx); err != nil {
		return nil, instance.Runtime{}, err
	}
	opts := modelconfig.Options{Override: ov}
	if m.cfg.AutoComplete {
		opts.AutoComplete = stubAutoCompleter{m: m, log: m.log.With("model", name, "phase", "auto-complete")}
	}
	spec, err := modelconfig.LoadWith(ctx, m.cfg.RepoDir, name, m.cfg.Defaults, opts)
	if err != nil {
		return nil, instance.Runtime{}, err
	}
	rt, err := m.runtimeFor(ctx, spec.Config.GetParameters(), spec.Dir)
	if err != nil {
		return nil, instance.Runtime{}, err
	}
	return spec, rt, nil
}

// newVersion builds a version's queue and instances. Instances of the
// model's first load are named as the configuration names them; later
// loads add "-r<load>".
func (m *Manager) newVersion(spec *modelconfig.Model, rt instance.Runtime, n int64, load int) *version {
	vs := strconv.FormatInt(n, 10)
	cfg := spec.Config
	b := scheduler.Batching{MaxBatchSize: int(cfg.GetMaxBatchSize()), MaxQueue: m.cfg.MaxQueue}
	if db := cfg.GetDynamicBatching(); db != nil && b.MaxBatchSize > 0 {
		b.Dynamic = true
		b.MaxDelay = time.Duration(db.GetMaxQueueDelayMicroseconds()) * time.Microsecond
		for _, p := range db.GetPreferredBatchSize() {
			b.Preferred = append(b.Preferred, int(p))
		}
	}
	stats := &scheduler.Stats{}
	if m.cfg.Observer != nil {
		stats.Observer = m.cfg.Observer(spec.Name, vs)
	}
	v := &version{
		drainTimeout: m.cfg.DrainTimeout,
		key:          health.ModelKey{Model: spec.Name, Version: vs},
		spec:         spec,
		number:       n,
		stats:        stats,
		queue:        scheduler.NewQueue(spec.Name+" version "+vs, b, stats),
	}
	if cfg.GetSequenceBatching() != nil {
		v.seq = m.newSequenceBatcher(v, spec, load)
	}
	if cfg.GetDynamicBatching().GetPreserveOrdering() {
		v.order = scheduler.NewOrdering()
	}
	dropped := m.metrics.dropped.WithLabelValues(spec.Name, vs)
	v.queue.OnDropped(dropped.Inc)
	configJSON, err := modelconfig.ToJSON(cfg)
	if err != nil {
		configJSON = []byte("{}")
	}
	for k, inName := range spec.InstanceNames() {
		if load > 1 {
			inName = fmt.Sprintf("%s-r%d", inName, load)
		}
		var queue instance.Source = v.queue
		if v.seq != nil {
			queue = v.seq.Instance(k)
		}
		key := health.InstanceKey{Model: spec.Name, Version: vs, Instance: inName}
		v.instances = append(v.instances, m.newInstance(instance.Config{
			Key:     key,
			Runtime: rt,
			Init: ipc.InitArgs{
				ModelFile:       spec.ModelFile(n),
				ModelName:       spec.Name,
				ModelVersion:    vs,
				ModelRepository: spec.Dir,
				InstanceName:    inName,
				InstanceKind:    "CPU",
				ModelConfigJSON: string(configJSON),
			},
			Warmup:            warmups(spec, vs),
			Policy:            spec.Policy,
			Queue:             queue,
			Calls:             m,
			Stats:             stats,
			Events:            m.cfg.Events,
			Logger:            m.log.With("model", spec.Name, "version", vs),
			FinalizeTimeout:   m.cfg.FinalizeTimeout,
			StopGrace:         m.cfg.StopGrace,
			Decoupled:         cfg.GetModelTransactionPolicy().GetDecoupled(),
			MaxStreamDuration: m.cfg.MaxStreamDuration,
		}))
	}
	return v
}

// stopVersions takes versions out of service and stops their instances.
func (m *Manager) stopVersions(ctx context.Context, vs map[string]*version, reason string) {
	for _, v := range vs {
		// Close the queue before the engine takes the instances out of
		// traffic, so that late requests are retried on a replacement
		// rather than told that no instance is routable.
		v.close()
		m.cfg.Events.Post(health.Event{Kind: health.ModelUnloading, At: time.Now(),
			Instance: health.InstanceKey{Model: v.key.Model, Version: v.key.Version}, Reason: reason})
	}
	m.retire(ctx, maps.Values(vs))
	for _, v := range vs {
		m.cfg.Events.Post(health.Event{Kind: health.ModelUnloaded, At: time.Now(),
			Instance: health.InstanceKey{Model: v.key.Model, Version: v.key.Version}, Reason: reason})
	}
}

// retire stops the instances of versions, in parallel, and drops them from
// the health engine's reach. It posts no lifecycle event: the caller says
// what the end means (an unload, a failed load, a replacement).
func (m *Manager) retire(ctx context.Context, vs iter.Seq[*version]) {
	var wg sync.WaitGroup
	for v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.stop(ctx)
			m.unregister(v)
		}()
	}
	wg.Wait()
}

// setServing marks the version serving (restarts are carried out at once
// from now on) and carries out the restarts decided while it loaded.
func (v *version) setServing(serving bool) {
	v.mu.Lock()
	v.serving = serving
	var pending map[string]string
	if serving {
		pending, v.restarts = v.restarts, nil
	}
	v.mu.Unlock()
	for _, in := range v.instances {
		if reason, ok := pending[in.Key().Instance]; ok {
			in.Restart(reason)
		}
	}
}

// drain waits, within ctx and at most the drain timeout, until the version's
// queue is empty: requests that reached it before traffic moved on are
// served by its own instances. Requests that arrive after it closes are
// retried on the version that replaced it.
func (v *version) drain(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, v.drainTimeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for v.queue.Len() > 0 || v.seq != nil && v.seq.Len() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errReplaced closes the queue of a version a reload replaced.
var errReplaced = errors.New("model version was replaced by a reload")

// close takes the version out of service: its queue refuses new requests
// and fails waiting ones with errReplaced, which Infer retries on whatever
// serves the model next. Idempotent.
func (v *version) close() {
	v.mu.Lock()
	v.serving, v.closed, v.restarts = false, true, nil
	v.mu.Unlock()
	err := &apierr.Error{Code: apierr.Unavailable, RetryAfter: time.Second, Err: errReplaced,
		Msg: fmt.Sprintf("model %s version %s is unloading", v.key.Model, v.key.Version)}
	v.queue.Close(err)
	if v.seq != nil {
		v.seq.Close(err)
	}
}

// stop closes the version's queue and stops its instances.
func (v *version) stop(ctx context.Context) {
	v.close()
	// A batch that never ends must not hold an unload (or the poller, or
	// shutdown) forever: after the drain limit the instance is stopped
	// under it, and its requests get 503.
	ctx, cancel := context.WithTimeout(ctx, v.drainTimeout)
	defer cancel()
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
