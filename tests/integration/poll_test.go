package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPollModeReloadsWithoutDroppingTraffic changes a model on disk while
// requests flow: the new code takes over, every request is answered 200,
// and readiness never drops.
func TestPollModeReloadsWithoutDroppingTraffic(t *testing.T) {
	s, finish := underPollLoad(t, "the reload")
	if err := os.WriteFile(filepath.Join(s.Repo, "echo", "1", "model.py"), doubledEcho(t, s), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the new code serves", func() bool {
		return strings.Contains(string(s.post("/v2/models/echo/infer", echoBody(3)).Body), `"data":[6`)
	})
	eventually(t, 10*time.Second, "old instances removed", func() bool {
		return len(s.stubPIDs("echo")) == 1
	})
	finish()
}

// underPollLoad starts a poll-mode server on the echo model with steady
// traffic running. finish stops the traffic and fails the test if any
// request failed or readiness dropped during what.
func underPollLoad(t *testing.T, what string) (s *server, finish func()) {
	t.Helper()
	s = start(t, copyModels(t, "echo"), "--model-control-mode", "poll", "--repository-poll-interval", "200ms")
	s.waitReady(30 * time.Second)
	stop := make(chan struct{})
	sent, result := steadyLoad(t, s, stop)
	eventually(t, 10*time.Second, "load running", func() bool { return sent.Load() > 20 })
	return s, func() {
		t.Helper()
		close(stop)
		bad, notReady := result()
		if len(bad) > 0 {
			t.Errorf("%d of %d requests failed during %s, e.g. %s", len(bad), sent.Load(), what, bad[0])
		}
		if notReady > 0 {
			t.Errorf("readiness dropped %d times during %s", notReady, what)
		}
		t.Logf("%d requests during %s", sent.Load(), what)
	}
}

// doubledEcho is the echo model's code changed to return twice its input.
func doubledEcho(t *testing.T, s *server) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(s.Repo, "echo", "1", "model.py"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(src), `.as_numpy())])`, `.as_numpy() * 2)])`, 1)
	if changed == string(src) {
		t.Fatal("could not rewrite the model")
	}
	return []byte(changed)
}

// TestPollModeKeepsServingThroughABrokenEdit breaks a serving model's
// config.pbtxt: the loaded version keeps serving and readiness stays true;
// fixing the file reloads it.
func TestPollModeKeepsServingThroughABrokenEdit(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--model-control-mode", "poll", "--repository-poll-interval", "100ms")
	s.waitReady(30 * time.Second)
	cfg := filepath.Join(s.Repo, "echo", "config.pbtxt")
	good, _ := os.ReadFile(cfg)
	if err := os.WriteFile(cfg, append(append([]byte{}, good...), "\nbogus_field: 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the broken edit is noticed", func() bool {
		return strings.Contains(s.logText(), "reload failed; the loaded model keeps serving")
	})
	if r := s.get("/v2/health/ready"); r.Status != 200 {
		t.Errorf("ready after a broken edit: %d %s", r.Status, r.Body)
	}
	if r := s.post("/v2/models/echo/infer", echoBody(1)); r.Status != 200 {
		t.Errorf("infer after a broken edit: %d %s", r.Status, r.Body)
	}
}

// steadyLoad sends echo requests from three clients and probes readiness
// until stop is closed; it reports the failures it saw.
func steadyLoad(t *testing.T, s *server, stop <-chan struct{}) (sent *atomic.Int64, result func() (bad []string, notReady int64)) {
	sent = &atomic.Int64{}
	var notReady atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	c := &http.Client{Timeout: 20 * time.Second}
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 1000000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Post(s.HTTP+"/v2/models/echo/infer", "application/json", strings.NewReader(echoBody(3)))
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					mu.Lock()
					failures = append(failures, resp.Status+" "+string(b))
					mu.Unlock()
				}
				sent.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; n < 1000000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if r, err := c.Get(s.HTTP + "/v2/health/ready"); err == nil {
				if r.StatusCode != 200 {
					notReady.Add(1)
				}
				r.Body.Close()
			}
		}
	}()
	return sent, func() ([]string, int64) {
		wg.Wait()
		return failures, notReady.Load()
	}
}

// TestPollModeSwitchesVersionsWithoutDroppingTraffic adds version 2 while
// requests flow: the latest-version policy moves traffic to it, version 1
// unloads afterwards, and no request fails.
func TestPollModeSwitchesVersionsWithoutDroppingTraffic(t *testing.T) {
	s, finish := underPollLoad(t, "the switch")
	if err := os.MkdirAll(filepath.Join(s.Repo, "echo", "2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Repo, "echo", "2", "model.py"), doubledEcho(t, s), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "version 2 serves", func() bool {
		r := s.post("/v2/models/echo/infer", echoBody(3))
		return strings.Contains(string(r.Body), `"model_version":"2"`) && strings.Contains(string(r.Body), `"data":[6`)
	})
	eventually(t, 10*time.Second, "version 1 unloaded", func() bool {
		return strings.Contains(string(s.post("/v2/repository/index", "").Body), `"version":"1","state":"UNAVAILABLE"`)
	})
	finish()
}

// TestFixedConfigAfterAFailedLoadClearsTheError loads a model whose
// config.pbtxt is broken, fixes it and loads again: readiness and the index
// must forget the old error.
func TestFixedConfigAfterAFailedLoadClearsTheError(t *testing.T) {
	s := start(t, copyModels(t, "echo", "add_sub"), "--model-control-mode", "explicit", "--load-model", "add_sub")
	s.waitReady(30 * time.Second)
	cfg := filepath.Join(s.Repo, "echo", "config.pbtxt")
	good, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(append([]byte{}, good...), "\nbogus_field: 1\n"...), 0o644)
	if r := s.post("/v2/repository/models/echo/load", ""); r.Status != 400 || !strings.Contains(string(r.Body), "bogus_field") {
		t.Fatalf("broken load: %d %s", r.Status, r.Body)
	}
	if r := s.get("/v2/health/ready"); r.Status != 503 {
		t.Errorf("a failed first load must show in strict readiness: %d", r.Status)
	}
	os.WriteFile(cfg, good, 0o644)
	if r := s.post("/v2/repository/models/echo/load", ""); r.Status != 200 {
		t.Fatalf("fixed load: %d %s", r.Status, r.Body)
	}
	if r := s.get("/v2/health/ready"); r.Status != 200 {
		t.Errorf("ready after the fixed load: %d %s", r.Status, r.Body)
	}
	if idx := string(s.post("/v2/repository/index", "").Body); strings.Contains(idx, "bogus_field") {
		t.Errorf("the index still shows the old error: %s", idx)
	}
}
