package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// gomaxprocs is the server's GOMAXPROCS, from its Go collector on
// /metrics; 0 when it cannot be read.
func (s *server) gomaxprocs() int {
	r := s.get("/metrics")
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_sched_gomaxprocs_threads "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// procs is the P count of the server's last "parallelism changed" log
// record (debug level), 0 before the first.
func (s *server) procs() int {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	for i := len(s.logs) - 1; i >= 0; i-- {
		if s.logs[i]["msg"] == "parallelism changed" {
			n, _ := s.logs[i]["procs"].(float64)
			return int(n)
		}
	}
	return 0
}

// An idle server runs one P; one that decodes JSON bodies as fast as
// clients send them gets more, and goes back to one when they stop
// (internal/procs). The test follows the governor's log, which costs the
// server nothing (scraping /metrics every few milliseconds would keep it
// busy), and checks /metrics once at each end.
func TestParallelismFollowsLoad(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: the runtime's default is one P already")
	}
	s := start(t, copyModels(t, "identity"), "--log-level", "debug")
	s.waitReady(60 * time.Second)
	eventually(t, 15*time.Second, "one P while idle", func() bool { return s.procs() == 1 })
	if n := s.gomaxprocs(); n != 1 {
		t.Fatalf("the log says one P, /metrics says GOMAXPROCS %d", n)
	}

	// 200,000 FP32 elements as JSON: the server's decode and encode take
	// milliseconds of CPU per request, more than the stub's work.
	var body strings.Builder
	body.WriteString(`{"inputs":[{"name":"INPUT_FP32","datatype":"FP32","shape":[200000],"data":[`)
	for i := range 200000 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, "%d.5", i%1000)
	}
	body.WriteString(`]}]}`)
	payload := []byte(body.String())

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "POST", s.HTTP+"/v2/models/identity/infer", bytes.NewReader(payload))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("infer: HTTP %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	eventually(t, 30*time.Second, "more than one P under load", func() bool {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		return s.procs() > 1
	})
	stop()
	wg.Wait()
	eventually(t, 15*time.Second, "one P again once idle", func() bool { return s.procs() == 1 })
	if n := s.gomaxprocs(); n != 1 {
		t.Fatalf("the log says one P, /metrics says GOMAXPROCS %d", n)
	}
}

// With GOMAXPROCS set, or --adaptive-procs=false, the count holds.
func TestParallelismHeld(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: nothing to lower")
	}
	for _, c := range []struct {
		name  string
		env   []string
		flags []string
		want  int
	}{
		{"GOMAXPROCS set", []string{"GOMAXPROCS=2"}, nil, 2},
		{"--adaptive-procs=false", nil, []string{"--adaptive-procs=false"}, 0}, // the runtime's default
	} {
		t.Run(c.name, func(t *testing.T) {
			s := startEnv(t, copyModels(t, "identity"), c.env, c.flags...)
			s.waitReady(60 * time.Second)
			want := c.want
			if want == 0 {
				if want = s.gomaxprocs(); want < 2 {
					t.Skipf("the runtime's default is %d P", want)
				}
			}
			// An idle server's governor would have lowered the count
			// within one second (ten windows); watch for twice that.
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
				if n := s.gomaxprocs(); n != want {
					t.Fatalf("GOMAXPROCS %d, want it held at %d", n, want)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if c.env != nil && !strings.Contains(s.logText(), "GOMAXPROCS is set") {
				t.Errorf("no log line says GOMAXPROCS is set:\n%s", s.logText())
			}
		})
	}
}
