package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStubThatWillNotStopIsKilledAtShutdown(t *testing.T) {
	s := start(t, copyModels(t, "stubborn"), "--finalize-timeout", "500ms")
	s.waitReady(30 * time.Second)
	pid := s.stubPIDs("stubborn")[0]
	began := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit")
	}
	t.Logf("exited %s after SIGTERM", time.Since(began))
	if s.exitErr != nil {
		t.Errorf("exit status %v, want 0", s.exitErr)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("stub %d survived the server (kill -0: %v)", pid, err)
	}
}

// probeCmd runs `vigil probe` and returns its exit code and output line.
func probeCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(vigilBin, append([]string{"probe"}, args...)...).Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, strings.TrimSpace(string(out))
}

func TestProbeCommandAgainstTheRealServer(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--drain-delay", "10s")
	s.waitReady(30 * time.Second)
	httpAddr := strings.TrimPrefix(s.HTTP, "http://")
	cases := []struct {
		args []string
		code int
		says string
	}{
		{[]string{"ready", "--addr", httpAddr}, 0, "ok"},
		{[]string{"live", "--protocol", "grpc", "--addr", s.GRPC}, 0, "ok"},
		{[]string{"model", "echo", "--addr", httpAddr}, 0, "ok"},
		{[]string{"model", "nope", "--protocol", "grpc", "--addr", s.GRPC}, 1, "nope"},
		{[]string{"ready", "--addr", "127.0.0.1:1", "--connect-timeout", "200ms"}, 2, "could not ask"},
		{[]string{"sideways"}, 3, ""},
	}
	for _, c := range cases {
		code, out := probeCmd(t, c.args...)
		if code != c.code || !strings.Contains(out, c.says) {
			t.Errorf("vigil probe %v: exit %d %q, want exit %d mentioning %q", c.args, code, out, c.code, c.says)
		}
	}
	// Drain: readiness fails and the probe says why.
	s.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "probe sees the drain", func() bool {
		code, out := probeCmd(t, "ready", "--addr", httpAddr)
		return code == 1 && strings.Contains(out, "shutting down")
	})
}

func TestAdminTokenGuardsTheRepositoryAPI(t *testing.T) {
	s := start(t, copyModels(t, "echo"), "--model-control-mode", "explicit", "--admin-token", "s3cret")
	if r := s.post("/v2/repository/models/echo/load", ""); r.Status != 401 {
		t.Errorf("load without a token: %d, want 401", r.Status)
	}
	if r := s.do("POST", "/v2/repository/models/echo/load", nil, "Authorization", "Bearer wrong"); r.Status != 403 {
		t.Errorf("load with a wrong token: %d, want 403", r.Status)
	}
	if r := s.do("POST", "/v2/repository/models/echo/load", nil, "Authorization", "Bearer s3cret"); r.Status != 200 {
		t.Errorf("load with the token: %d %s", r.Status, r.Body)
	}
	if r := s.get("/v2/health/ready"); r.Status != 200 {
		t.Errorf("health needs no token: %d", r.Status)
	}
}

// TestProcessesStartedByAModelDoNotOutliveIt checks both ends of a stub's
// life: a crash and a clean shutdown take the processes it started along.
func TestProcessesStartedByAModelDoNotOutliveIt(t *testing.T) {
	s := start(t, copyModels(t, "spawner"))
	s.waitReady(30 * time.Second)
	helperPID := func() int {
		b, err := os.ReadFile(filepath.Join(s.Repo, "spawner", "HELPER_PID"))
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	gone := func(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }
	first := helperPID()
	syscall.Kill(s.stubPIDs("spawner")[0], syscall.SIGKILL)
	eventually(t, 10*time.Second, "the crashed stub's helper is gone", func() bool { return first > 0 && gone(first) })
	eventually(t, 30*time.Second, "restarted with a new helper", func() bool {
		p := helperPID()
		return p != first && p > 0 && s.get("/v2/models/spawner/ready").Status == 200
	})
	second := helperPID()
	s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.exited
	eventually(t, 5*time.Second, "the helper is gone after shutdown", func() bool { return gone(second) })
}

func TestStubsRunAtTheConfiguredNiceValue(t *testing.T) {
	own, err := niceOf(os.Getpid(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, copyModels(t, "echo"), "--stub-nice", "7")
	s.waitReady(30 * time.Second)
	pid := s.stubPIDs("echo")[0]
	want := min(own+7, 19)
	// Every thread: the stub lowers its priority before starting any.
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) < 2 {
		t.Fatalf("stub %d has %d threads, want its reader threads too", pid, len(tasks))
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		got, err := niceOf(pid, tid)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("stub %d thread %d: nice %d, want %d", pid, tid, got, want)
		}
	}
	if got, _ := niceOf(s.cmd.Process.Pid, s.cmd.Process.Pid); got != own {
		t.Errorf("server nice %d, want its own %d unchanged", got, own)
	}
}

// niceOf reads a thread's nice value from /proc (field 19 of stat).
func niceOf(pid, tid int) (int, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(tid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return strconv.Atoi(fields[16]) // fields[0] is field 3
}
