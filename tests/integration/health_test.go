package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/responder"
)

// instanceField reads one field of a model's first instance from the
// health JSON.
func (s *server) instance(model string) map[string]any {
	s.t.Helper()
	models, _ := s.healthJSON()["models"].([]any)
	for _, m := range models {
		mm := m.(map[string]any)
		if mm["name"] == model {
			if ins, _ := mm["instances"].([]any); len(ins) > 0 {
				return ins[0].(map[string]any)
			}
		}
	}
	return nil
}

func (s *server) restarts(model string) float64 {
	in := s.instance(model)
	if in == nil {
		return -1
	}
	n, _ := in["restarts"].(float64)
	return n
}

func TestHookReturningFalseTakesInstanceOutOfTrafficThenRestartsIt(t *testing.T) {
	s := start(t, copyModels(t, "hooked"))
	s.waitReady(30 * time.Second)
	flag := filepath.Join(s.Repo, "hooked", "UNHEALTHY")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "out of traffic after the hook fails", func() bool {
		r := s.get("/v2/models/hooked/ready")
		return r.Status == 503 && strings.Contains(string(r.Body), "returned False")
	})
	if r := s.post("/v2/models/hooked/infer", echoBody(1)); r.Status != 503 || r.Header.Get("Retry-After") == "" {
		t.Errorf("infer on an out-of-traffic model: %d %s, want 503 with Retry-After", r.Status, r.Body)
	}
	// restart_threshold_seconds is 1: the instance is restarted while the
	// hook keeps failing.
	eventually(t, 10*time.Second, "restarted after the restart threshold", func() bool { return s.restarts("hooked") >= 1 })
	os.Remove(flag)
	eventually(t, 10*time.Second, "back in traffic when the hook recovers", func() bool {
		return s.get("/v2/models/hooked/ready").Status == 200
	})
	if r := s.post("/v2/models/hooked/infer", echoBody(1)); r.Status != 200 {
		t.Fatalf("infer after recovery: %d %s", r.Status, r.Body)
	}
}

// A stopped stub is an event: the reaper sees the stop, the instance leaves
// traffic at once (default heartbeat), comes back on SIGCONT by the same
// path, and a stop that lasts is restarted after restart_threshold_seconds.
func TestStoppedStubLeavesTrafficAtOnceAndReturnsOnSIGCONT(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--health-default", "restart_threshold_seconds=3")
	s.waitReady(30 * time.Second)
	pid := s.stubPIDs("echo")[0]
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	took := eventually(t, 5*time.Second, "not ready after SIGSTOP", func() bool {
		r := s.get("/v2/models/echo/ready")
		return r.Status == 503 && strings.Contains(string(r.Body), "stopped by signal SIGSTOP")
	})
	t.Logf("SIGSTOP seen after %s (heartbeat timeout 2s)", took)
	if took > time.Second {
		t.Errorf("a stopped stub stayed ready for %s; it should leave at the event", took)
	}
	if r := s.post("/v2/models/echo/infer", echoBody(1)); r.Status != 503 {
		t.Errorf("infer while the only stub is stopped: %d %s, want 503", r.Status, r.Body)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	back := eventually(t, 5*time.Second, "ready after SIGCONT", func() bool {
		return s.get("/v2/models/echo/ready").Status == 200
	})
	t.Logf("SIGCONT seen after %s", back)
	if pids := s.stubPIDs("echo"); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("the continued stub was replaced: %v", pids)
	}
	if r := s.post("/v2/models/echo/infer", echoBody(1)); r.Status != 200 {
		t.Fatalf("infer after SIGCONT: %d %s", r.Status, r.Body)
	}
	syscall.Kill(pid, syscall.SIGSTOP)
	eventually(t, 15*time.Second, "a new process serves", func() bool {
		pids := s.stubPIDs("echo")
		return len(pids) == 1 && pids[0] != pid && s.get("/v2/models/echo/ready").Status == 200
	})
}

func TestHungExecuteGets504AndTheInstanceIsRestarted(t *testing.T) {
	s := start(t, copyModels(t, "sleepy"))
	s.waitReady(30 * time.Second)
	// execute_timeout_seconds is 1 in sleepy's health.yaml.
	r := s.post("/v2/models/sleepy/infer", echoBody(60))
	if r.Status != 504 || !strings.Contains(string(r.Body), "execute_timeout_seconds") {
		t.Fatalf("hung execute: %d %s, want 504", r.Status, r.Body)
	}
	eventually(t, 10*time.Second, "the hung instance restarted", func() bool {
		h := string(s.get("/readyz?format=json").Body)
		return strings.Contains(h, `"restarts":1`)
	})
	s.waitReady(10 * time.Second)
	if r := s.post("/v2/models/sleepy/infer", echoBody(0)); r.Status != 200 {
		t.Fatalf("infer after restart: %d %s", r.Status, r.Body)
	}
}

func TestErrorPatternRestartsTheInstance(t *testing.T) {
	s := start(t, copyModels(t, "faulty"))
	s.waitReady(30 * time.Second)
	if r := s.post("/v2/models/faulty/infer", echoBody(-1)); r.Status != 500 {
		t.Fatalf("CUDA error: %d %s", r.Status, r.Body)
	}
	eventually(t, 10*time.Second, "restarted after the CUDA error", func() bool { return s.restarts("faulty") >= 1 })
	s.waitReady(10 * time.Second)
	if r := s.post("/v2/models/faulty/infer", echoBody(1)); r.Status != 200 {
		t.Fatalf("after restart: %d %s", r.Status, r.Body)
	}
}

func TestCrashLoopEndsFailedAndFailsLiveness(t *testing.T) {
	s := start(t, copyModels(t, "crashy"))
	s.waitReady(30 * time.Second)
	if err := os.WriteFile(filepath.Join(s.Repo, "crashy", "CRASH"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pid := s.stubPIDs("crashy")[0]
	syscall.Kill(pid, syscall.SIGKILL)
	eventually(t, 20*time.Second, "liveness fails once restarts are exhausted", func() bool {
		r := s.get("/livez")
		return r.Status == 503 && strings.Contains(string(r.Body), "crashy")
	})
	r := s.get("/v2/health/live")
	if r.Status != 503 {
		t.Errorf("/v2/health/live: %d %s", r.Status, r.Body)
	}
	if in := s.instance("crashy"); in == nil || in["state"] != "FAILED" {
		t.Errorf("instance %v, want FAILED", in)
	}
}

func TestOneDeadInstanceOfTwoIsDegradedButReady(t *testing.T) {
	s := start(t, copyModels(t, "add_sub"), "--health-default", "restart_backoff={initial_seconds: 30}")
	s.waitReady(30 * time.Second)
	pids := s.stubPIDs("add_sub")
	if len(pids) != 2 {
		t.Fatalf("pids %v", pids)
	}
	// Kill one instance twice: the first restart is immediate, the second
	// waits 30 s, which leaves time to look at the degraded state.
	syscall.Kill(pids[0], syscall.SIGKILL)
	eventually(t, 10*time.Second, "first restart", func() bool {
		p := s.stubPIDs("add_sub")
		return len(p) == 2 && p[0] != pids[0] && p[1] != pids[0]
	})
	var victim int
	for _, p := range s.stubPIDs("add_sub") {
		if p != pids[1] {
			victim = p
		}
	}
	syscall.Kill(victim, syscall.SIGKILL)
	eventually(t, 5*time.Second, "degraded", func() bool {
		return strings.Contains(string(s.get("/readyz?verbose").Body), "degraded")
	})
	if r := s.get("/v2/health/ready"); r.Status != 200 {
		t.Fatalf("ready with one of two instances: %d %s", r.Status, r.Body)
	}
	for i := 0; i < 20; i++ {
		if r := s.post("/v2/models/add_sub/infer", addSubBody(1, 2)); r.Status != 200 {
			t.Fatalf("request %d on a degraded model: %d %s", i, r.Status, r.Body)
		}
	}
	m := string(s.get("/metrics").Body)
	if !strings.Contains(m, `vigil_model_degraded{model="add_sub",version="1"} 1`) {
		t.Errorf("metrics do not show the degraded model")
	}
}

func TestHealthPortServesProbesAndMetricsOnly(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--health-port", "0")
	s.waitReady(30 * time.Second)
	h := &server{t: t, HTTP: "http://" + s.listening("health")}
	if r := h.get("/readyz"); r.Status != 200 || string(r.Body) != "ok" {
		t.Errorf("/readyz on the health port: %d %s", r.Status, r.Body)
	}
	if r := h.get("/v2/health/ready"); r.Status != 200 {
		t.Errorf("/v2/health/ready on the health port: %d", r.Status)
	}
	eventually(t, 5*time.Second, "metrics with a heartbeat duration", func() bool {
		m := string(h.get("/metrics").Body)
		return strings.Contains(m, "vigil_server_ready 1") &&
			strings.Contains(m, `vigil_health_check_duration_seconds_count{check="heartbeat",model="echo",version="1"}`)
	})
	if r := h.post("/v2/models/echo/infer", echoBody(1)); r.Status != 404 {
		t.Errorf("inference on the health port: %d, want 404", r.Status)
	}
}

// listening returns the address the server logged for protocol.
func (s *server) listening(protocol string) string {
	s.t.Helper()
	var addr string
	eventually(s.t, 5*time.Second, protocol+" listener logged", func() bool {
		s.logMu.Lock()
		defer s.logMu.Unlock()
		for _, r := range s.logs {
			if r["msg"] == "listening" && r["protocol"] == protocol {
				addr, _ = r["addr"].(string)
			}
		}
		return addr != ""
	})
	return addr
}

// responderPID is the pid of the server's probe responder child, or 0.
func (s *server) responderPID() int {
	s.t.Helper()
	entries, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(s.cmd.Process.Pid) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(e), "cmdline"))
		if strings.Contains(string(cmdline), "probe-responder") {
			return pid
		}
	}
	return 0
}

// The probe port answers from a child process: the server's own answers,
// word for word; the truth when the server itself stops answering; and a
// child that dies is replaced on the same port.
func TestProbePortAnswersFromAChildProcess(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--probe-port", "0", "--watchdog-interval", "200ms")
	s.waitReady(30 * time.Second)
	p := &server{t: t, HTTP: "http://" + s.listening("probes")}
	for _, path := range []string{"/readyz?verbose", "/livez?verbose", "/startupz", "/v2/health/ready",
		"/v2/models/echo/ready", "/v2/models/nope/ready"} {
		eventually(t, 5*time.Second, path+" as the server answers it", func() bool {
			want, got := s.get(path), p.get(path)
			return got.Status == want.Status && string(got.Body) == string(want.Body)
		})
	}
	// The JSON detail is the snapshot's; only the serving process knows
	// the requests an instance holds right now.
	if r := p.get("/readyz?format=json"); r.Status != 200 || !strings.Contains(string(r.Body), `"name":"echo_0","state":"READY"`) ||
		strings.Contains(string(r.Body), "requests_in_flight") {
		t.Errorf("/readyz?format=json on the probe port: %d %s", r.Status, r.Body)
	}
	if r := p.post("/v2/models/echo/infer", echoBody(1)); r.Status != 404 {
		t.Errorf("inference on the probe port: %d, want 404", r.Status)
	}

	// Stopped, the server answers nothing; the probe port says why, once
	// the watchdog's bound (3 × 200 ms) has passed without a snapshot.
	pid := s.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 10*time.Second, "the probe port fails liveness", func() bool {
		r := p.get("/livez?verbose")
		return r.Status == 503 && strings.Contains(string(r.Body), "[-]ping failed: the server process has reported no health for")
	})
	t.Logf("liveness failed on the probe port %s after SIGSTOP (bound 600 ms)", took)
	if r := p.get("/readyz"); r.Status != 503 {
		t.Errorf("/readyz while the server is stopped: %d, want 503", r.Status)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "live again after SIGCONT", func() bool {
		r := p.get("/livez")
		return r.Status == 200 && string(r.Body) == "ok"
	})

	child := s.responderPID()
	if child == 0 {
		t.Fatal("no probe-responder child of the server")
	}
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "another child answers on the same port", func() bool {
		next := s.responderPID()
		return next != 0 && next != child && p.get("/readyz").Status == 200
	})
}

// --probe-rt-priority runs every thread of the probe port's process, and
// none of the server's, under SCHED_FIFO; where that is not allowed the
// server refuses to start and says why.
func TestProbePortRealtime(t *testing.T) {
	repo := copyModels(t, "echo")
	if err := responder.CheckRealtime(1); err != nil {
		cmd := exec.Command(vigilBin, "serve", "--model-repository", repo, "--host", "127.0.0.1",
			"--http-port", "0", "--grpc-port", "0", "--python", python, "--probe-port", "0", "--probe-rt-priority", "1")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--probe-rt-priority 1:") || !strings.Contains(string(out), "CAP_SYS_NICE") {
			t.Fatalf("without the right to SCHED_FIFO: %v\n%s", err, out)
		}
		return
	}
	s := start(t, repo, "--probe-port", "0", "--probe-rt-priority", "1")
	s.waitReady(30 * time.Second)
	p := &server{t: t, HTTP: "http://" + s.listening("probes")}
	eventually(t, 5*time.Second, "the probe port answers", func() bool { return p.get("/readyz").Status == 200 })
	policies := func(pid int) (fifo, other int) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		for _, st := range tasks {
			b, err := os.ReadFile(st)
			if err != nil {
				continue
			}
			// Fields after the command: 40 rt_priority and 41 policy of
			// proc(5) are the 38th and 39th.
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			if len(f) > 38 && f[38] == "1" && f[37] == "1" {
				fifo++
			} else {
				other++
			}
		}
		return fifo, other
	}
	child := s.responderPID()
	if child == 0 {
		t.Fatal("no probe-responder child of the server")
	}
	if fifo, other := policies(child); fifo == 0 || other != 0 {
		t.Errorf("probe responder: %d threads under SCHED_FIFO 1, %d not", fifo, other)
	}
	if fifo, _ := policies(s.cmd.Process.Pid); fifo != 0 {
		t.Errorf("the server has %d threads under SCHED_FIFO", fifo)
	}
}
