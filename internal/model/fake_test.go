package model

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
)

const fakeWait = 10 * time.Second

// fleet builds fake instances and lets a test steer them: hold a Start
// until released, fail it, make a running instance exit.
type fleet struct {
	t *testing.T

	mu        sync.Mutex
	nextPID   int
	instances map[string]*fakeInstance // by instance name; the latest of that name
	gates     map[string]chan struct{} // Start of that name waits for the channel
	startErr  map[string]error         // Start of that name fails after spawning
}

func newFleet(t *testing.T) *fleet {
	return &fleet{t: t, nextPID: 1000, instances: map[string]*fakeInstance{},
		gates: map[string]chan struct{}{}, startErr: map[string]error{}}
}

// hold makes the next Start of name wait until the returned func is called.
func (f *fleet) hold(name string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.gates[name] = ch
	f.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

func (f *fleet) new(cfg instance.Config) Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := &fakeInstance{f: f, cfg: cfg}
	f.instances[cfg.Key.Instance] = in
	return in
}

func (f *fleet) get(name string) *fakeInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.instances[name]
}

func (f *fleet) pid() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextPID++
	return f.nextPID
}

// fakeInstance posts the events a real instance posts, without a process.
type fakeInstance struct {
	f   *fleet
	cfg instance.Config
	wg  sync.WaitGroup

	mu       sync.Mutex
	pid      int
	routable bool
	restarts int
	failed   bool
	stopped  bool
}

func (in *fakeInstance) Key() health.InstanceKey { return in.cfg.Key }

func (in *fakeInstance) Held() (int, int) { return 0, 0 }

func (in *fakeInstance) post(ev health.Event) {
	ev.Instance, ev.At = in.cfg.Key, time.Now()
	in.cfg.Events.Post(ev)
}

// spawn starts a "process": spawned, then initialized.
func (in *fakeInstance) spawn() {
	pid := in.f.pid()
	in.mu.Lock()
	in.pid = pid
	in.mu.Unlock()
	in.post(health.Event{Kind: health.InstanceSpawned, PID: pid})
	in.post(health.Event{Kind: health.InstanceInitialized, PID: pid})
}

func (in *fakeInstance) Start(ctx context.Context) error {
	name := in.cfg.Key.Instance
	in.f.mu.Lock()
	gate, err := in.f.gates[name], in.f.startErr[name]
	delete(in.f.gates, name)
	in.f.mu.Unlock()
	pid := in.f.pid()
	in.mu.Lock()
	in.pid = pid
	in.mu.Unlock()
	in.post(health.Event{Kind: health.InstanceSpawned, PID: pid})
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		in.post(health.Event{Kind: health.InstanceInitFailed, PID: pid, Reason: err.Error()})
		return err
	}
	in.post(health.Event{Kind: health.InstanceInitialized, PID: pid})
	return nil
}

func (in *fakeInstance) SetRoutable(r bool) {
	in.mu.Lock()
	in.routable = r
	in.mu.Unlock()
}

func (in *fakeInstance) Restart(string) {
	in.mu.Lock()
	if in.stopped {
		in.mu.Unlock()
		return
	}
	in.failed = false
	in.restarts++
	in.mu.Unlock()
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		in.spawn()
	}()
}

func (in *fakeInstance) Fail(string) {
	in.mu.Lock()
	in.failed = true
	in.mu.Unlock()
}

func (in *fakeInstance) Stop(context.Context) {
	in.wg.Wait()
	in.mu.Lock()
	in.stopped = true
	in.mu.Unlock()
	in.post(health.Event{Kind: health.InstanceStopped})
}

// exit makes the running "process" die by SIGKILL.
func (in *fakeInstance) exit() {
	in.mu.Lock()
	pid := in.pid
	in.mu.Unlock()
	in.post(health.Event{Kind: health.InstanceExited, PID: pid, Signal: "SIGKILL"})
}

func (in *fakeInstance) restartCount() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.restarts
}

// fakeRepo writes a repository with one model m of count instances.
func fakeRepo(t *testing.T, count int, healthYAML string) string {
	t.Helper()
	return oneModelRepo(t, `name: "m"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { count: `+string(rune('0'+count))+` kind: KIND_CPU } ]
`, healthYAML)
}

// oneModelRepo writes a repository with one model m: its config.pbtxt, an
// empty model.py (the instances are fakes) and, if not empty, health.yaml.
func oneModelRepo(t *testing.T, cfg, healthYAML string) string {
	t.Helper()
	dir := t.TempDir()
	md := filepath.Join(dir, "m")
	if err := os.MkdirAll(filepath.Join(md, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(md, "config.pbtxt"), cfg)
	write(filepath.Join(md, "1", "model.py"), "class TritonPythonModel:\n    pass\n")
	if healthYAML != "" {
		write(filepath.Join(md, "health.yaml"), healthYAML)
	}
	return dir
}

// fakeManager is a manager over fake instances with a real health engine.
func fakeManager(t *testing.T, repo string) (*Manager, *health.Engine, *fleet) {
	t.Helper()
	f := newFleet(t)
	eng := health.NewEngine(health.EngineConfig{Strict: true, Escalate: true, WatchdogInterval: -1})
	m := New(Config{RepoDir: repo, Mode: ModeExplicit, Defaults: health.DefaultPolicy(),
		Events: eng, Health: eng, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NewInstance: f.new})
	eng.SetActuator(m)
	eng.Start(context.Background())
	t.Cleanup(func() {
		m.Close(context.Background())
		eng.Close()
	})
	return m, eng, f
}

// waitModel polls the snapshot until cond holds for model m version 1.
func waitModel(t *testing.T, eng *health.Engine, what string, cond func(*health.ModelHealth) bool) *health.ModelHealth {
	t.Helper()
	deadline := time.Now().Add(fakeWait)
	for {
		_ = eng.Sync(context.Background())
		mh, ok := eng.Snapshot().Model("m", "1")
		if ok && cond(mh) {
			return mh
		}
		if time.Now().After(deadline) {
			t.Fatalf("model never %s: %+v", what, mh)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func instanceState(mh *health.ModelHealth, name string) health.InstanceState {
	for _, in := range mh.Instances {
		if in.Name == name {
			return in.State
		}
	}
	return ""
}

var errBoom = errors.New("initialize raised RuntimeError: boom")

func contains(s, sub string) bool { return strings.Contains(s, sub) }
