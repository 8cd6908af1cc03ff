package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// records returns the server's JSON log records that match every key=value
// of want.
func (s *server) records(want map[string]string) []map[string]any {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	var out []map[string]any
	for _, r := range s.logs {
		ok := true
		for k, v := range want {
			if fmt.Sprint(r[k]) != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit within 30s of SIGTERM")
	}
}

// checkTraceback requires exactly one "model raised" record for the op and
// model, at error level, with the instance and a full traceback naming the
// model's file and the raised text.
func checkTraceback(t *testing.T, s *server, model, op, raised string) map[string]any {
	t.Helper()
	recs := s.records(map[string]string{"msg": "model raised", "model": model, "op": op})
	if len(recs) != 1 {
		t.Fatalf("%s %s: %d \"model raised\" records, want exactly 1:\n%s", model, op, len(recs), s.logText())
	}
	r := recs[0]
	tb, _ := r["traceback"].(string)
	if r["level"] != "ERROR" || r["instance"] != model+"_0" || r["version"] != "1" {
		t.Errorf("%s %s: record %v, want level ERROR, instance %s_0, version 1", model, op, r, model)
	}
	if !strings.HasPrefix(tb, "Traceback (most recent call last):") || !strings.Contains(tb, "model.py\", line ") ||
		!strings.Contains(tb, raised) {
		t.Errorf("%s %s: traceback %q, want the full Python traceback through model.py ending in %q", model, op, tb, raised)
	}
	return r
}

func TestTracebacksGoToTheServerLogOnce(t *testing.T) {
	s := start(t, copyModels(t, "faulty", "init_raises", "raises_late"), "--finalize-timeout", "5s")
	eventually(t, 60*time.Second, "faulty and raises_late ready", func() bool {
		return s.get("/v2/models/faulty/ready").Status == 200 && s.get("/v2/models/raises_late/ready").Status == 200
	})

	// execute: the client gets one line, the log the traceback with the request id.
	r := s.post("/v2/models/faulty/infer", `{"id":"req-42","inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[-1]}]}`)
	if r.Status != 500 {
		t.Fatalf("infer: %d %s, want 500", r.Status, r.Body)
	}
	msg, _ := r.json(t)["error"].(string)
	if strings.Contains(msg, "\n") || strings.Contains(msg, "Traceback") || !strings.Contains(msg, "CUDA error") {
		t.Errorf("client message %q, want one line naming the error and no traceback", msg)
	}
	eventually(t, 10*time.Second, "execute traceback logged", func() bool {
		return len(s.records(map[string]string{"msg": "model raised", "op": "execute"})) > 0
	})
	rec := checkTraceback(t, s, "faulty", "execute", "RuntimeError: CUDA error: an illegal memory access was encountered")
	if rec["request_id"] != "req-42" {
		t.Errorf("execute record request_id = %v, want req-42", rec["request_id"])
	}

	// initialize, on every attempt of the load (one here: a raising
	// initialize fails the load). The loads run side by side, so
	// init_raises may still be starting when the others are ready.
	eventually(t, 60*time.Second, "initialize traceback logged", func() bool {
		return len(s.records(map[string]string{"msg": "model raised", "op": "initialize"})) > 0
	})
	checkTraceback(t, s, "init_raises", "initialize", "ValueError: cannot open weights file /nonexistent/weights.bin")

	// The hook raises every 100 ms; the traceback is logged once.
	eventually(t, 20*time.Second, "hook raised several times", func() bool {
		for _, c := range checksOf(s, "raises_late") {
			if c["name"] == "hook" && c["consecutive"].(float64) >= 5 {
				return true
			}
		}
		return false
	})
	checkTraceback(t, s, "raises_late", "is_healthy", "OSError: weights checksum mismatch")

	s.stop(t)
	checkTraceback(t, s, "raises_late", "finalize", "RuntimeError: cannot flush the cache")
}

// checksOf returns the checks of a model's first instance from /readyz?format=json.
func checksOf(s *server, model string) []map[string]any {
	var out []map[string]any
	models, _ := s.healthJSON()["models"].([]any)
	for _, m := range models {
		mm := m.(map[string]any)
		if mm["name"] != model {
			continue
		}
		for _, in := range mm["instances"].([]any) {
			for _, c := range in.(map[string]any)["checks"].([]any) {
				out = append(out, c.(map[string]any))
			}
			return out
		}
	}
	return out
}

func TestNormalShutdownLogsAtInfo(t *testing.T) {
	s := start(t, copyModels(t, "echo", "add_sub"))
	s.waitReady(60 * time.Second)
	// One stub has just been killed when the shutdown comes (its restart
	// may be under way): its end is no news at shutdown either.
	pid := s.stubPIDs("echo")[0]
	// ps says which stub serves what.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	if args := strings.ReplaceAll(string(cmdline), "\x00", " "); !strings.Contains(args, "--model echo --version 1 --instance echo_0") {
		t.Errorf("stub command line %q does not name its model and instance", args)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "vigil:echo_0" {
		t.Errorf("stub process name %q, want vigil:echo_0", comm)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the kill noticed", func() bool {
		return len(s.records(map[string]string{"msg": "instance state changed", "model": "echo", "to": "RESTARTING"})) > 0
	})
	s.stop(t)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	shutting := false
	for _, r := range s.logs {
		if r["msg"] == "shutting down: draining" {
			shutting = true
			continue
		}
		if shutting && r["level"] != "INFO" && r["level"] != "DEBUG" {
			t.Errorf("at shutdown: %v, want INFO", r)
		}
	}
	if !shutting {
		t.Fatal("no \"shutting down\" record")
	}
}

func TestRepositoryWarnings(t *testing.T) {
	repo := copyModels(t, "echo")
	for _, d := range []string{"notes", ".git"} {
		if err := os.Mkdir(filepath.Join(repo, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := start(t, repo)
	s.waitReady(60 * time.Second)
	skipped := s.records(map[string]string{"msg": "skipping a directory of the model repository: it is not a model"})
	if len(skipped) != 1 || skipped[0]["dir"] != "notes" || !strings.HasPrefix(fmt.Sprint(skipped[0]["reason"]), "no config.pbtxt and no version directory") || skipped[0]["level"] != "WARN" {
		t.Errorf("skipped-directory warnings: %v, want one WARN for notes saying it has no config.pbtxt and no version directory", skipped)
	}
	if n := len(s.records(map[string]string{"level": "WARN"})); n != len(skipped) {
		t.Errorf("%d warnings, want only the skipped directory's:\n%s", n, s.logText())
	}

	// --model-repository pointing at a model's own folder.
	folder := filepath.Join(repo, "echo")
	m := start(t, folder)
	eventually(t, 30*time.Second, "warnings about a model folder", func() bool {
		return len(m.records(map[string]string{"level": "WARN", "repository": folder})) >= 3
	})
	for _, msg := range []string{
		"the model repository is itself a model's folder (it holds config.pbtxt): point --model-repository at the directory that contains model folders",
		"the model repository holds no model (a model is a folder with a config.pbtxt): no model will be ready",
		"skipping a directory of the model repository: it is not a model",
	} {
		if len(m.records(map[string]string{"msg": msg, "level": "WARN"})) != 1 {
			t.Errorf("want one WARN %q:\n%s", msg, m.logText())
		}
	}
	if rec := m.records(map[string]string{"msg": "the model repository is itself a model's folder (it holds config.pbtxt): " +
		"point --model-repository at the directory that contains model folders"}); len(rec) == 1 && rec[0]["did_you_mean"] != repo {
		t.Errorf("did_you_mean = %v, want %s", rec[0]["did_you_mean"], repo)
	}
}

// TestNumpyInstalledLaterLoadsWithoutRestart starts vigil on an
// interpreter without numpy (a bare virtual environment), then "installs"
// numpy into it (a .pth file pointing at the test interpreter's
// site-packages, instead of a download) and loads the model again.
func TestNumpyInstalledLaterLoadsWithoutRestart(t *testing.T) {
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command(python, "-m", "venv", "--without-pip", venv).CombinedOutput(); err != nil {
		t.Fatalf("python -m venv: %v\n%s", err, out)
	}
	bare := filepath.Join(venv, "bin", "python")
	if exec.Command(bare, "-c", "import numpy").Run() == nil {
		t.Fatal("the bare virtual environment imports numpy; the test needs one that does not")
	}

	none := start(t, copyModels(t, "echo"), "--python", bare)
	eventually(t, 30*time.Second, "the no-numpy error (mode none)", func() bool {
		return len(none.records(map[string]string{"msg": "no usable python interpreter: models cannot load"})) == 1
	})
	rec := none.records(map[string]string{"msg": "no usable python interpreter: models cannot load"})[0]
	if !strings.Contains(fmt.Sprint(rec["err"]), "-m pip install numpy") || !strings.Contains(fmt.Sprint(rec["then"]), "restart vigil") {
		t.Errorf("mode none: %v, want how to install numpy and that a restart is needed", rec)
	}

	s := start(t, copyModels(t, "echo"), "--python", bare, "--model-control-mode", "explicit", "--load-model", "echo")
	eventually(t, 30*time.Second, "the load failed", func() bool {
		return len(s.records(map[string]string{"msg": "model failed to load", "model": "echo"})) == 1
	})
	rec = s.records(map[string]string{"msg": "model failed to load", "model": "echo"})[0]
	if !strings.Contains(fmt.Sprint(rec["err"]), "then load the model again (POST /v2/repository/models/<name>/load): no restart needed") {
		t.Errorf("explicit mode: %v, want the reload hint", rec["err"])
	}

	site, err := exec.Command(python, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))").Output()
	if err != nil {
		t.Fatal(err)
	}
	venvSite, err := exec.Command(bare, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(strings.TrimSpace(string(venvSite)), "numpy-from-test.pth"), site, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := s.post("/v2/repository/models/echo/load", "{}"); r.Status != 200 {
		t.Fatalf("load after installing numpy: %d %s", r.Status, r.Body)
	}
	s.waitReady(30 * time.Second)
}

// environ returns the value of name in the environment pid started with
// ("" when it has none).
func environ(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// vigil serve runs with GODEBUG's schedtrace set, so that the runtime's
// monitor thread does not park and wake for every request
// (cmd/vigil/sysmon.go), keeping the other settings of GODEBUG; a GODEBUG
// that names schedtrace is left as it is.
func TestServeRunsWithSchedtrace(t *testing.T) {
	repo := copyModels(t, "echo")
	s := startEnv(t, repo, []string{"GODEBUG=madvdontneed=1"})
	s.waitReady(60 * time.Second)
	if v := environ(t, s.cmd.Process.Pid, "GODEBUG"); v != "madvdontneed=1,schedtrace=2147483647" {
		t.Errorf("server GODEBUG = %q, want madvdontneed=1,schedtrace=2147483647", v)
	}
	// The process re-executed keeps its name for ps and top.
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.cmd.Process.Pid)); strings.TrimSpace(string(comm)) != filepath.Base(vigilBin) {
		t.Errorf("server process name %q, want %q", strings.TrimSpace(string(comm)), filepath.Base(vigilBin))
	}
	s = startEnv(t, repo, []string{"GODEBUG=schedtrace=0"})
	s.waitReady(60 * time.Second)
	if v := environ(t, s.cmd.Process.Pid, "GODEBUG"); v != "schedtrace=0" {
		t.Errorf("server GODEBUG = %q, want schedtrace=0 as given", v)
	}
}
