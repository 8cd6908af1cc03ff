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
	s := start(t, copyModels(t, "echo"), "--model-control-mode", "poll", "--repository-poll-interval", "200ms")
	s.waitReady(30 * time.Second)

	var sent, notReady atomic.Int64
	var mu sync.Mutex
	var bad []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	c := &http.Client{Timeout: 20 * time.Second}
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Post(s.HTTP+"/v2/models/echo/infer", "application/json", strings.NewReader(echoBody(3)))
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					mu.Lock()
					bad = append(bad, resp.Status+" "+string(b))
					mu.Unlock()
				}
				sent.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
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
	eventually(t, 10*time.Second, "load running", func() bool { return sent.Load() > 20 })

	// New code: the output is twice the input.
	model := filepath.Join(s.Repo, "echo", "1", "model.py")
	src, _ := os.ReadFile(model)
	changed := strings.Replace(string(src), `.as_numpy())])`, `.as_numpy() * 2)])`, 1)
	if changed == string(src) {
		t.Fatal("could not rewrite the model")
	}
	if err := os.WriteFile(model, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the new code serves", func() bool {
		return strings.Contains(string(s.post("/v2/models/echo/infer", echoBody(3)).Body), `"data":[6`)
	})
	eventually(t, 10*time.Second, "old instances removed", func() bool {
		return len(s.stubPIDs("echo")) == 1
	})
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d requests failed during the reload, e.g. %s", len(bad), sent.Load(), bad[0])
	}
	if n := notReady.Load(); n > 0 {
		t.Errorf("readiness dropped %d times during the reload", n)
	}
	t.Logf("%d requests during the reload, all answered", sent.Load())
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
