package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A request executing on a stub that is stopped is answered 503 within the
// heartbeat timeout of the stop (2 s by default: a ping is sent at the stop)
// instead of waiting for the restart threshold, and the instance is
// restarted at once.
func TestWedgedRequestIsAnsweredWithinTheHeartbeatBound(t *testing.T) {
	s := start(t, copyModels(t, "hang"))
	s.waitReady(30 * time.Second)
	pid := s.stubPIDs("hang")[0]
	type result struct {
		r  response
		at time.Time
	}
	done := make(chan result, 1)
	go func() {
		r := s.post("/v2/models/hang/infer", echoBody(1))
		done <- result{r, time.Now()}
	}()
	eventually(t, 10*time.Second, "the request executing", func() bool {
		_, err := os.Stat(filepath.Join(s.Repo, "hang", "EXECUTING"))
		return err == nil
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	wedged := time.Now()
	var res result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the wedged request was not answered within 20s")
	}
	took := res.at.Sub(wedged)
	t.Logf("wedge to 503: %s (bound: heartbeat timeout 2s + 1s)", took)
	if res.r.Status != 503 || !strings.Contains(string(res.r.Body), "stopped responding") ||
		!strings.Contains(string(res.r.Body), "stopped by a signal") {
		t.Fatalf("wedged request: %d %s, want 503 saying why", res.r.Status, res.r.Body)
	}
	if took > 3*time.Second {
		t.Errorf("wedged request answered after %s, want within heartbeat_timeout_seconds + 1 s", took)
	}
	eventually(t, 15*time.Second, "a new process serves", func() bool {
		pids := s.stubPIDs("hang")
		return len(pids) == 1 && pids[0] != pid && s.restarts("hang") == 1 && s.get("/v2/models/hang/ready").Status == 200
	})
}

// A stub stopped inside initialize is a hang: the load fails saying so
// instead of loading forever, and start-up completes.
func TestStubStoppedInsideInitializeFailsTheLoad(t *testing.T) {
	s := start(t, copyModels(t, "glacial"))
	var pid int
	eventually(t, 20*time.Second, "glacial's stub spawned", func() bool {
		if pids := s.stubPIDs("glacial"); len(pids) == 1 {
			pid = pids[0]
			return true
		}
		return false
	})
	// The control thread answers pings from the stub's start on; give it
	// a moment to answer one, then stop the stub.
	time.Sleep(500 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	took := eventually(t, 15*time.Second, "start-up finished", func() bool { return s.get("/startupz").Status == 200 })
	t.Logf("stopped in initialize: load failed after %s", took)
	r := s.get("/v2/models/glacial/ready")
	if r.Status != 503 || !strings.Contains(string(r.Body), "initialize") || !strings.Contains(string(r.Body), "hung") {
		t.Fatalf("glacial ready: %d %s, want 503 saying initialize hung", r.Status, r.Body)
	}
}

// initialize_timeout_seconds bounds initialize.
func TestInitializeTimeoutFailsTheLoad(t *testing.T) {
	s := start(t, copyModels(t, "glacial"), "--health-default", "initialize_timeout_seconds=1")
	eventually(t, 20*time.Second, "start-up finished", func() bool { return s.get("/startupz").Status == 200 })
	r := s.get("/v2/models/glacial/ready")
	if r.Status != 503 || !strings.Contains(string(r.Body), "initialize_timeout_seconds") {
		t.Fatalf("glacial ready: %d %s, want 503 naming initialize_timeout_seconds", r.Status, r.Body)
	}
}

// Clients that reuse keep-alive connections through SIGTERM lose nothing:
// from the start of the drain every response says "Connection: close", so
// no idle keep-alive connection is left to race with the listener close.
// Every request sent on a reused connection gets a response. (A request on
// a fresh connection still in the kernel's accept queue when the listener
// closes is reset: that race is TCP's, nothing was read, and in Kubernetes
// the endpoint is gone by then; it is counted, not failed.)
func TestKeepAliveClientsThroughSIGTERM(t *testing.T) {
	const drainDelay = time.Second
	s := start(t, copyModels(t, "add_sub"), "--drain-delay", drainDelay.String())
	s.waitReady(30 * time.Second)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 20 * time.Second}
	body := addSubBody(2, 1)
	var (
		mu                                   sync.Mutex
		lost                                 []string
		served, refused, closeAfter, backlog atomic.Int64
		signalled                            atomic.Bool
	)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var reused bool
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
				req, _ := http.NewRequest("POST", s.HTTP+"/v2/models/add_sub/infer", strings.NewReader(body))
				req = req.WithContext(httptrace.WithClientTrace(context.Background(), trace))
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					var op *net.OpError
					switch {
					case errors.As(err, &op) && op.Op == "dial":
						refused.Add(1)
						return // the listeners are closed: nothing was sent
					case !reused && signalled.Load():
						backlog.Add(1)
						return
					}
					mu.Lock()
					lost = append(lost, fmt.Sprintf("(reused connection %v) %v", reused, err))
					mu.Unlock()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				served.Add(1)
				if signalled.Load() && resp.Close {
					closeAfter.Add(1)
				}
			}
		}()
	}
	eventually(t, 10*time.Second, "load running", func() bool { return served.Load() > 50 })
	signalled.Store(true)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	t.Logf("served %d, %d of them with Connection: close after SIGTERM; at the close %d clients refused, %d reset in the accept queue",
		served.Load(), closeAfter.Load(), refused.Load(), backlog.Load())
	if len(lost) > 0 {
		t.Fatalf("%d requests got no response, e.g. %q", len(lost), lost[0])
	}
	if closeAfter.Load() == 0 {
		t.Error("no response during the drain said Connection: close")
	}
}
