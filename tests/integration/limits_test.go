package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// vmKiB reads a VmRSS/VmHWM-style field of /proc/<pid>/status in KiB.
func vmKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// Small gzip bodies that expand far beyond --max-request-bytes, sent at
// once, are each refused (413 naming the limit, or 503 naming the byte
// budget), the server's memory stays within the budget's reach, and it
// keeps serving.
func TestDecompressionBombsAreRefusedWithinTheBudget(t *testing.T) {
	const limit, budget = 4 << 20, 8 << 20
	s := start(t, copyModels(t, "echo"), "--max-request-bytes", strconv.Itoa(limit),
		"--max-concurrent-request-bytes", strconv.Itoa(budget))
	s.waitReady(30 * time.Second)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zero := make([]byte, 1<<20)
	for range 64 { // 64 MiB of zeros: about 64 KiB compressed
		zw.Write(zero)
	}
	zw.Close()
	pid := s.cmd.Process.Pid
	before := vmKiB(t, pid, "VmHWM")
	const n = 64
	type result struct {
		code int
		body string
		err  error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", s.HTTP+"/v2/models/echo/infer", bytes.NewReader(gz.Bytes()))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Content-Encoding", "gzip")
			resp, err := client.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results[i] = result{code: resp.StatusCode, body: string(b)}
		}()
	}
	wg.Wait()
	counts := map[int]int{}
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("bomb %d: %v", i, r.err)
		case r.code == 413 && strings.Contains(r.body, fmt.Sprintf("over the limit of %d bytes (--max-request-bytes)", limit)):
		case r.code == 503 && strings.Contains(r.body, "--max-concurrent-request-bytes"):
		default:
			t.Errorf("bomb %d: %d %s, want 413 naming the limit or 503 naming the budget", i, r.code, r.body)
		}
		counts[r.code]++
	}
	grew := vmKiB(t, pid, "VmHWM") - before
	t.Logf("%d bombs of %d bytes (64 MiB decompressed): %v; peak RSS grew %d KiB (budget %d KiB)", n, gz.Len(), counts, grew, budget>>10)
	if counts[413] == 0 {
		t.Error("no bomb reached the limit")
	}
	// Without the decompressed bytes in the budget, 64 bombs may hold
	// 64 x 4 MiB at once; with them, the budget, plus the garbage the
	// collector lets accumulate (its heap goal is twice the live heap), and
	// the race detector's shadow memory in a -race build.
	bound := int64(128 << 10)
	if raceBuild(t) {
		bound *= 3
	}
	if grew > bound {
		t.Errorf("peak RSS grew %d KiB, more than %d KiB", grew, bound)
	}
	if r := s.post("/v2/models/echo/infer", echoBody(3)); r.Status != 200 {
		t.Errorf("after the bombs: %d %s", r.Status, r.Body)
	}
}

// A body that does not arrive within --body-read-timeout is answered 400
// naming the flag, within the bound, and the server keeps serving.
func TestSlowBodyGetsTheDocumentedStatusWithinTheBound(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--body-read-timeout", "1s")
	s.waitReady(30 * time.Second)
	c, err := net.Dial("tcp", strings.TrimPrefix(s.HTTP, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begin := time.Now()
	fmt.Fprintf(c, "POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inputs\":")
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	took := time.Since(begin)
	t.Logf("stalled body answered after %s: %d %s", took, resp.StatusCode, b)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "did not arrive within the body read timeout (--body-read-timeout)") {
		t.Errorf("stalled body: %d %s, want 400 naming --body-read-timeout", resp.StatusCode, b)
	}
	if took > 3*time.Second {
		t.Errorf("answered after %s with --body-read-timeout 1s", took)
	}
	if r := s.post("/v2/models/echo/infer", echoBody(2)); r.Status != 200 {
		t.Errorf("after the stalled body: %d %s", r.Status, r.Body)
	}
}

// An instance whose restarts are exhausted is FAILED (liveness fails) and
// is retried every restart_backoff.max_seconds: while the cause stays,
// every retry fails and it stays FAILED; once the cause is gone, the next
// retry makes it READY and liveness passes again, with no reload.
func TestFailedInstanceIsRetriedAtMaxBackoffAndHeals(t *testing.T) {
	repo := copyModels(t, "crashy")
	if err := os.WriteFile(filepath.Join(repo, "crashy", "health.yaml"), []byte(
		"max_restarts: 2\nrestart_window_seconds: 600\nrestart_backoff: { initial_seconds: 0.1, max_seconds: 1 }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, repo)
	s.waitReady(30 * time.Second)
	marker := filepath.Join(s.Repo, "crashy", "CRASH")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(s.stubPIDs("crashy")[0], syscall.SIGKILL)
	eventually(t, 20*time.Second, "FAILED and liveness failing", func() bool {
		in := s.instance("crashy")
		return in != nil && in["state"] == "FAILED" && s.get("/livez").Status == 503
	})
	failedAt := time.Now()
	first := s.restarts("crashy")
	// Two retries at the maximum backoff, each failing: still FAILED.
	eventually(t, 20*time.Second, "two retries while FAILED", func() bool { return s.restarts("crashy") >= first+2 })
	spent := time.Since(failedAt)
	t.Logf("two retries %s after FAILED (max backoff 1s)", spent)
	if spent < 1500*time.Millisecond {
		t.Errorf("two retries within %s: not paced at the 1 s maximum backoff", spent)
	}
	if in := s.instance("crashy"); in["state"] != "FAILED" {
		t.Errorf("state %v after failed retries, want FAILED", in["state"])
	}
	if r := s.post("/v2/models/crashy/infer", echoBody(1)); r.Status != 503 || r.Header.Get("Retry-After") == "" {
		t.Errorf("infer while FAILED: %d %s (Retry-After %q), want 503 with Retry-After", r.Status, r.Body, r.Header.Get("Retry-After"))
	}
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	healed := eventually(t, 20*time.Second, "READY again by a retry", func() bool {
		in := s.instance("crashy")
		return in != nil && in["state"] == "READY" && s.get("/livez").Status == 200
	})
	t.Logf("healed %s after the cause went away", healed)
	if r := s.post("/v2/models/crashy/infer", echoBody(1)); r.Status != 200 {
		t.Errorf("infer after healing: %d %s", r.Status, r.Body)
	}
}

// raceBuild reports whether the binary under test was built with -race.
func raceBuild(t *testing.T) bool {
	t.Helper()
	info, err := buildinfo.ReadFile(vigilBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range info.Settings {
		if kv.Key == "-race" && kv.Value == "true" {
			return true
		}
	}
	return false
}
