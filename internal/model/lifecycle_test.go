package model

import (
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// An instance that dies after its initialize while another instance of the
// same version still initializes is restarted once the load finishes: the
// engine's decision is carried out when it becomes possible, never dropped.
func TestRestartDecidedDuringLoadIsCarriedOut(t *testing.T) {
	m, eng, f := fakeManager(t, fakeRepo(t, 2, ""))
	release := f.hold("m_1")
	done := make(chan error, 1)
	go func() { done <- m.Load(context.Background(), "m", nil) }()

	waitModel(t, eng, "showing m_0 READY", func(mh *health.ModelHealth) bool {
		return instanceState(mh, "m_0") == health.StateReady
	})
	f.get("m_0").exit()
	waitModel(t, eng, "restarting m_0", func(mh *health.ModelHealth) bool {
		return instanceState(mh, "m_0") == health.StateRestarting
	})
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mh := waitModel(t, eng, "ready with both instances", func(mh *health.ModelHealth) bool {
		return mh.Ready && mh.Routable() == 2
	})
	if mh.Degraded {
		t.Fatalf("model degraded: %+v", mh)
	}
	if n := f.get("m_0").restartCount(); n != 1 {
		t.Fatalf("m_0 restarted %d times, want 1", n)
	}
}

// A restart decided during a load that then fails is not carried out: the
// version is retired, and nothing it started is left running.
func TestRestartDecidedDuringFailedLoadIsMoot(t *testing.T) {
	m, eng, f := fakeManager(t, fakeRepo(t, 2, ""))
	release := f.hold("m_1")
	f.mu.Lock()
	f.startErr["m_1"] = errBoom
	f.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- m.Load(context.Background(), "m", nil) }()
	waitModel(t, eng, "showing m_0 READY", func(mh *health.ModelHealth) bool {
		return instanceState(mh, "m_0") == health.StateReady
	})
	f.get("m_0").exit()
	waitModel(t, eng, "restarting m_0", func(mh *health.ModelHealth) bool {
		return instanceState(mh, "m_0") == health.StateRestarting
	})
	release()
	if err := <-done; err == nil || !contains(err.Error(), "boom") {
		t.Fatalf("Load = %v, want the initialize error", err)
	}
	mh := waitModel(t, eng, "unavailable", func(mh *health.ModelHealth) bool {
		return mh.State == health.ModelStateUnavailable
	})
	if mh.Ready || !contains(mh.Reason, "boom") {
		t.Fatalf("model %+v, want unavailable saying why", mh)
	}
	if n := f.get("m_0").restartCount(); n != 0 {
		t.Fatalf("m_0 of a failed load restarted %d times", n)
	}
	for _, in := range []string{"m_0", "m_1"} {
		if !f.get(in).stopped {
			t.Errorf("%s of the failed load was not stopped", in)
		}
	}
}

// A serving instance that dies is restarted at once through the actuator.
func TestServingInstanceDeathIsRestarted(t *testing.T) {
	m, eng, f := fakeManager(t, fakeRepo(t, 1, ""))
	if err := m.Load(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	f.get("m_0").exit()
	waitModel(t, eng, "ready again", func(mh *health.ModelHealth) bool {
		return mh.Ready && mh.Instances[0].Restarts == 1
	})
	if n := f.get("m_0").restartCount(); n != 1 {
		t.Fatalf("restarted %d times", n)
	}
}

// A reload keeps serving while its new instances initialize; an old
// instance that dies meanwhile is restarted (its version still serves), and
// the reload then replaces it.
func TestReloadWhileAnOldInstanceDies(t *testing.T) {
	m, eng, f := fakeManager(t, fakeRepo(t, 1, ""))
	if err := m.Load(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	old := f.get("m_0")
	release := f.hold("m_0-r2")
	done := make(chan error, 1)
	go func() { done <- m.Load(context.Background(), "m", nil) }()
	waitModel(t, eng, "showing the new instance", func(mh *health.ModelHealth) bool {
		return instanceState(mh, "m_0-r2") == health.StateStarting
	})
	old.exit()
	waitModel(t, eng, "ready again on the old instance", func(mh *health.ModelHealth) bool {
		return instanceState(mh, "m_0") == health.StateReady && old.restartCount() == 1
	})
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mh := waitModel(t, eng, "served by the new instance only", func(mh *health.ModelHealth) bool {
		return mh.Ready && len(mh.Instances) == 1 && mh.Instances[0].Name == "m_0-r2"
	})
	_ = mh
	if !old.stopped {
		t.Error("the replaced instance was not stopped")
	}
}

// A request for a model whose instances have all exhausted their restarts
// is told why, and to come back when the next retry is due, not in 1 s.
func TestRequestForAFailedModelSaysWhenToRetry(t *testing.T) {
	m, eng, f := fakeManager(t, fakeRepo(t, 1, "max_restarts: 1\nrestart_backoff: {initial_seconds: 0.1, max_seconds: 120}\n"))
	if err := m.Load(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	f.get("m_0").exit()
	waitModel(t, eng, "restarted once", func(mh *health.ModelHealth) bool { return mh.Ready && mh.Instances[0].Restarts == 1 })
	f.get("m_0").exit()
	waitModel(t, eng, "FAILED", func(mh *health.ModelHealth) bool { return instanceState(mh, "m_0") == health.StateFailed })
	req := &inference.Request{Model: "m", Inputs: []tensor.Tensor{{Name: "INPUT0", Datatype: tensor.FP32, Shape: []int64{1}, Data: make([]byte, 4)}}}
	_, err := m.Infer(context.Background(), req)
	if apierr.CodeOf(err) != apierr.Unavailable || !contains(err.Error(), "restarts exhausted") {
		t.Fatalf("Infer = %v, want 503 saying the restarts are exhausted", err)
	}
	if d := apierr.RetryAfter(err); d < 100*time.Second {
		t.Fatalf("Retry-After %s, want the time to the next retry (about 120 s)", d)
	}
}
