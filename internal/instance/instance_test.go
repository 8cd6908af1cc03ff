package instance

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/scheduler"
	"github.com/vigilhq/vigil/internal/tensor"
	stubpy "github.com/vigilhq/vigil/python"
	"github.com/vigilhq/vigil/python/pythontest"
)

const testTimeout = 20 * time.Second

// sink records events and lets tests wait for one. Like the health
// engine, it can be synced: syncedAt records how many events had been
// posted at each Sync.
type sink struct {
	mu       sync.Mutex
	events   []health.Event
	syncedAt []int
	added    chan struct{}
}

func (s *sink) Sync(context.Context) error {
	s.mu.Lock()
	s.syncedAt = append(s.syncedAt, len(s.events))
	s.mu.Unlock()
	return nil
}

func newSink() *sink { return &sink{added: make(chan struct{}, 1000)} }

func (s *sink) Post(ev health.Event) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	s.added <- struct{}{}
}

// waitFor waits for an event matching match, posted after the first skip
// events, and returns it with its index.
func (s *sink) waitFor(t *testing.T, skip int, what string, match func(health.Event) bool) (health.Event, int) {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		s.mu.Lock()
		for i := skip; i < len(s.events); i++ {
			if match(s.events[i]) {
				ev := s.events[i]
				s.mu.Unlock()
				return ev, i
			}
		}
		s.mu.Unlock()
		select {
		case <-s.added:
		case <-deadline:
			t.Fatalf("no %s event within %s", what, testTimeout)
		}
	}
}

func kind(k health.EventKind) func(health.Event) bool {
	return func(ev health.Event) bool { return ev.Kind == k }
}

func testRuntime(t *testing.T) Runtime {
	t.Helper()
	exe, pp := pythontest.Runtime(t)
	return Runtime{Python: exe, PythonPath: pp, Args: stubpy.Args(0)}
}

func newEcho(t *testing.T, ev *sink, q *scheduler.Queue, policy health.Policy) *Instance {
	t.Helper()
	return newTestInstance(t, ev, q, policy, "echo", `{"name":"echo"}`)
}

// newTestInstance is an instance of testdata/<model> with the given
// configuration JSON.
func newTestInstance(t *testing.T, ev *sink, q *scheduler.Queue, policy health.Policy, model, configJSON string) *Instance {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("testdata", model))
	return New(Config{
		Key:     health.InstanceKey{Model: model, Version: "1", Instance: model + "_0"},
		Runtime: testRuntime(t),
		Init: ipc.InitArgs{ModelFile: filepath.Join(dir, "1", "model.py"), ModelName: model, ModelVersion: "1",
			ModelRepository: dir, InstanceName: model + "_0", InstanceKind: "CPU", ModelConfigJSON: configJSON},
		Policy:          policy,
		Queue:           q,
		Stats:           &scheduler.Stats{},
		Events:          ev,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		FinalizeTimeout: time.Second,
		StopGrace:       time.Second,
	})
}

// started starts in, stops it when the test ends, and returns its
// initialized event and that event's index in ev.
func started(t *testing.T, in *Instance, ev *sink) (health.Event, int) {
	t.Helper()
	if err := in.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	return ev.waitFor(t, 0, "initialized", kind(health.InstanceInitialized))
}

// serving is started, then puts in in traffic on q.
func serving(t *testing.T, in *Instance, ev *sink, q *scheduler.Queue) (health.Event, int) {
	t.Helper()
	init, i := started(t, in, ev)
	in.SetRoutable(true)
	q.SetRoutable(1)
	return init, i
}

func echoRequest(v float32) *inference.Request {
	b := binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
	return &inference.Request{Model: "echo", Inputs: []tensor.Tensor{{Name: "INPUT0", Datatype: tensor.FP32, Shape: []int64{1}, Data: b}}}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return c
}

func TestServesWhileRoutableAndReportsItsDeath(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	in := newEcho(t, ev, q, health.DefaultPolicy())
	init, _ := serving(t, in, ev, q)
	resp, err := q.Submit(ctx(t), echoRequest(2.5), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(resp.Outputs[0].Data)); got != 2.5 {
		t.Fatalf("echo returned %v", got)
	}
	if err := syscall.Kill(init.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, _ := ev.waitFor(t, 0, "exited", kind(health.InstanceExited))
	if exit.Signal != "SIGKILL" || exit.PID != init.PID {
		t.Errorf("exit event %+v", exit)
	}
}

func TestRestartStartsANewProcess(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	in := newEcho(t, ev, q, health.DefaultPolicy())
	first, i := started(t, in, ev)
	in.Restart("test")
	second, _ := ev.waitFor(t, i+1, "initialized again", kind(health.InstanceInitialized))
	if second.PID == first.PID || second.PID == 0 {
		t.Fatalf("restart kept pid %d", first.PID)
	}
	if err := syscall.Kill(first.PID, 0); err == nil {
		t.Errorf("the old process %d still exists", first.PID)
	}
}

func TestStopDuringRestartLeavesNoProcess(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	in := newEcho(t, ev, q, health.DefaultPolicy())
	if err := in.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	in.Restart("test")
	done := make(chan struct{})
	go func() {
		in.Stop(context.Background())
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("Stop hung while a restart was under way")
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.events {
		if e.Kind == health.InstanceSpawned {
			if err := syscall.Kill(e.PID, 0); err == nil {
				t.Errorf("process %d outlived Stop", e.PID)
			}
		}
	}
}

func TestHeartbeatReportsAStoppedProcess(t *testing.T) {
	ev := newSink()
	q := scheduler.NewQueue("echo", scheduler.Batching{}, &scheduler.Stats{})
	p := health.DefaultPolicy()
	p.HeartbeatPeriod, p.HeartbeatTimeout = 50*time.Millisecond, 200*time.Millisecond
	in := newEcho(t, ev, q, p)
	init, i := started(t, in, ev)
	ev.waitFor(t, i, "a passing heartbeat", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && e.OK && e.Took > 0
	})
	syscall.Kill(init.PID, syscall.SIGSTOP)
	defer syscall.Kill(init.PID, syscall.SIGKILL)
	fail, _ := ev.waitFor(t, i, "a failing heartbeat", func(e health.Event) bool {
		return e.Kind == health.CheckResult && e.Check == health.CheckHeartbeat && !e.OK
	})
	if !strings.Contains(fail.Reason, "ping") || fail.PID != init.PID {
		t.Errorf("heartbeat failure %+v", fail)
	}
}
