package integration

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestDrainUnderLoadAnswersEveryRequest keeps requests flowing through
// SIGTERM the way a load balancer does: it goes on sending while the
// endpoint is being removed (the drain delay) and stops shortly before the
// delay ends. Readiness must fail at once, liveness must not, every request
// must get a complete 200, a request still executing when the listeners close
// must finish, and no stub may outlive the server.
func TestDrainUnderLoadAnswersEveryRequest(t *testing.T) {
	// The slow request below (1.5 s, executing before SIGTERM) outlasts
	// the drain delay, so it is executing when the listeners close.
	// sleepy's execute_timeout_seconds (1 s) is off here, so that the
	// request's only limit is the drain.
	const drainDelay = 600 * time.Millisecond
	repo := copyModels(t, "add_sub", "sleepy")
	if err := os.WriteFile(filepath.Join(repo, "sleepy", "health.yaml"), []byte("execute_timeout_seconds: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, repo, "--drain-delay", drainDelay.String(), "--shutdown-timeout", "10s")
	s.waitReady(30 * time.Second)
	pids := append(s.stubPIDs("add_sub"), s.stubPIDs("sleepy")...)

	body := addSubBody(2, 1)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
	var ok, duringDrain atomic.Int64
	var signalledAt atomic.Int64
	var mu sync.Mutex
	var bad []string
	fail := func(msg string) {
		mu.Lock()
		bad = append(bad, msg)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 1000000; n++ {
				if at := signalledAt.Load(); at != 0 && time.Since(time.Unix(0, at)) > drainDelay*2/3 {
					return // the endpoint is gone from the load balancer
				}
				resp, err := c.Post(s.HTTP+"/v2/models/add_sub/infer", "application/json", strings.NewReader(body))
				if err != nil {
					fail(err.Error())
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), `"OUTPUT1"`) {
					fail(resp.Status + " " + string(b))
					return
				}
				ok.Add(1)
				if signalledAt.Load() != 0 {
					duringDrain.Add(1)
				}
			}
		}()
	}
	eventually(t, 10*time.Second, "load running", func() bool { return ok.Load() > 20 })
	// A slow request that is still executing when the listeners close:
	// it is on the stub (sleepy writes EXECUTING) before the SIGTERM.
	slow := make(chan response, 1)
	var slowDone atomic.Int64
	go func() {
		resp, err := c.Post(s.HTTP+"/v2/models/sleepy/infer", "application/json", strings.NewReader(echoBody(1.5)))
		if err != nil {
			slow <- response{Status: -1, Body: []byte(err.Error())}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slowDone.Store(time.Now().UnixNano())
		slow <- response{Status: resp.StatusCode, Body: b}
	}()
	eventually(t, 10*time.Second, "the slow request executing", func() bool {
		_, err := os.Stat(filepath.Join(s.Repo, "sleepy", "EXECUTING"))
		return err == nil
	})
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalledAt.Store(time.Now().UnixNano())
	took := eventually(t, time.Second, "readiness fails after SIGTERM", func() bool {
		return s.get("/v2/health/ready").Status == 503
	})
	t.Logf("readiness failed %s after SIGTERM", took)
	if r := s.get("/v2/health/live"); r.Status != 200 {
		t.Errorf("live during drain: %d", r.Status)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit")
	}
	wg.Wait()
	r := <-slow
	if r.Status != 200 {
		t.Errorf("request executing when the listeners closed: %d %s", r.Status, r.Body)
	}
	if answered := time.Duration(slowDone.Load() - signalledAt.Load()); r.Status == 200 && answered < drainDelay {
		t.Errorf("the slow request was answered %s after SIGTERM, before the listeners closed at %s: it did not span the close", answered, drainDelay)
	}
	if s.exitErr != nil {
		t.Errorf("exit status: %v, want 0", s.exitErr)
	}
	if len(bad) > 0 {
		t.Errorf("%d requests lost or broken, e.g. %q", len(bad), bad[0])
	}
	if duringDrain.Load() == 0 {
		t.Errorf("no request was served during the drain delay")
	}
	t.Logf("served %d requests, %d of them after SIGTERM", ok.Load(), duringDrain.Load())
	if _, err := c.Get(s.HTTP + "/v2/health/live"); err == nil {
		t.Errorf("server still answers after exit")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("stub %d still exists after exit (kill -0: %v)", pid, err)
		}
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--drain-delay", "60s")
	s.waitReady(30 * time.Second)
	s.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "draining", func() bool { return s.get("/v2/health/ready").Status == 503 })
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("a second signal did not end the server")
	}
}

// TestShutdownAnswersARequestThatNeverFinishes: a request still executing
// when the shutdown timeout ends gets an answer (503), not a closed
// connection, and the server still exits promptly.
func TestShutdownAnswersARequestThatNeverFinishes(t *testing.T) {
	s := start(t, copyModels(t, "hang"), "--shutdown-timeout", "1s", "--finalize-timeout", "1s")
	s.waitReady(30 * time.Second)
	got := make(chan response, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Post(s.HTTP+"/v2/models/hang/infer", "application/json", strings.NewReader(echoBody(1)))
		if err != nil {
			got <- response{Status: -1, Body: []byte(err.Error())}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- response{Status: resp.StatusCode, Body: b}
	}()
	eventually(t, 10*time.Second, "executing", func() bool {
		_, err := os.Stat(filepath.Join(s.Repo, "hang", "EXECUTING"))
		return err == nil
	})
	began := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	r := <-got
	if r.Status != 503 {
		t.Errorf("stuck request at shutdown: %d %s, want a 503 answer", r.Status, r.Body)
	}
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit")
	}
	t.Logf("answered %d %q; exited %s after SIGTERM", r.Status, r.Body, time.Since(began))
	if s.exitErr != nil {
		t.Errorf("exit status %v", s.exitErr)
	}
}

// TestShutdownAnswersALoadInProgress: a repository load still running at
// shutdown is cancelled and answered 503, not cut off.
func TestShutdownAnswersALoadInProgress(t *testing.T) {
	s := start(t, copyModels(t, "echo", "glacial"), "--model-control-mode", "explicit", "--load-model", "echo",
		"--shutdown-timeout", "1s", "--finalize-timeout", "1s")
	s.waitReady(30 * time.Second)
	got := make(chan response, 1)
	go func() {
		c := &http.Client{Timeout: 60 * time.Second}
		resp, err := c.Post(s.HTTP+"/v2/repository/models/glacial/load", "application/json", nil)
		if err != nil {
			got <- response{Status: -1, Body: []byte(err.Error())}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- response{Status: resp.StatusCode, Body: b}
	}()
	eventually(t, 10*time.Second, "glacial loading", func() bool {
		return strings.Contains(string(s.get("/readyz?format=json").Body), `"name":"glacial"`)
	})
	s.cmd.Process.Signal(syscall.SIGTERM)
	r := <-got
	if r.Status != 503 || !strings.Contains(string(r.Body), "shutting down") {
		t.Errorf("load in progress at shutdown: %d %s, want 503 saying the server is shutting down", r.Status, r.Body)
	}
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit")
	}
	if s.exitErr != nil {
		t.Errorf("exit status %v", s.exitErr)
	}
}
