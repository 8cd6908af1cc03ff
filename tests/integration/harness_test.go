// Package integration starts the real vigil binary with real Python stub
// processes and checks what its health endpoints say, and when, while the
// tests kill, stop and break those processes.
package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// vigilBin is the vigil binary under test, built once by TestMain.
var vigilBin string

// python is the interpreter the stubs run with.
var python string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vigil-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// VIGIL_BIN names a binary built already (make test builds one);
	// otherwise the tests build their own.
	vigilBin = os.Getenv("VIGIL_BIN")
	if vigilBin == "" {
		vigilBin = filepath.Join(dir, "vigil")
		build := exec.Command("go", "build", "-o", vigilBin, "./cmd/vigil")
		build.Dir = repoRoot()
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "cannot build vigil:", err)
			os.Exit(1)
		}
	}
	python = os.Getenv("VIGIL_PYTHON")
	if python == "" {
		python = "python3"
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// server is one running vigil.
type server struct {
	t       *testing.T
	cmd     *exec.Cmd
	HTTP    string // base URL
	GRPC    string // host:port
	Repo    string
	exited  chan struct{}
	logMu   sync.Mutex
	logs    []map[string]any
	raced   bool // the race detector reported in the server (a -race build)
	exitErr error
}

// copyModels builds a repository in a temp dir from models under
// examples/models and tests/integration/testdata/models.
func copyModels(t *testing.T, names ...string) string {
	t.Helper()
	repo := t.TempDir()
	for _, n := range names {
		src := filepath.Join(repoRoot(), "examples", "models", n)
		if _, err := os.Stat(src); err != nil {
			src = filepath.Join(repoRoot(), "tests", "integration", "testdata", "models", n)
		}
		if err := os.CopyFS(filepath.Join(repo, n), os.DirFS(src)); err != nil {
			t.Fatalf("copy model %s: %v", n, err)
		}
	}
	return repo
}

// start runs vigil on repo with extra flags and waits until it listens.
func start(t *testing.T, repo string, flags ...string) *server {
	t.Helper()
	return startEnv(t, repo, nil, flags...)
}

// startEnv is start with variables added to the server's environment.
func startEnv(t *testing.T, repo string, env []string, flags ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--model-repository", repo, "--host", "127.0.0.1",
		"--http-port", "0", "--grpc-port", "0", "--log-format", "json", "--python", python,
		"--drain-delay", "0s"}, flags...)
	cmd := exec.Command(vigilBin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, Repo: repo, exited: make(chan struct{})}
	addrs := make(chan [2]string, 1)
	go s.readLogs(stderr, addrs)
	go func() {
		s.exitErr = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.kill)
	select {
	case a := <-addrs:
		s.HTTP, s.GRPC = "http://"+a[0], a[1]
	case <-s.exited:
		t.Fatalf("vigil exited before listening: %v\n%s", s.exitErr, s.logText())
	case <-time.After(20 * time.Second):
		t.Fatalf("vigil did not listen within 20s\n%s", s.logText())
	}
	return s
}

func (s *server) readLogs(r io.Reader, addrs chan<- [2]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var httpAddr, grpcAddr string
	sent := false
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			rec = map[string]any{"msg": sc.Text()}
		}
		s.logMu.Lock()
		s.logs = append(s.logs, rec)
		if strings.Contains(sc.Text(), "WARNING: DATA RACE") {
			s.raced = true
		}
		s.logMu.Unlock()
		if rec["msg"] == "listening" {
			switch rec["protocol"] {
			case "http":
				httpAddr, _ = rec["addr"].(string)
			case "grpc":
				grpcAddr, _ = rec["addr"].(string)
			}
			if httpAddr != "" && grpcAddr != "" && !sent {
				addrs <- [2]string{httpAddr, grpcAddr}
				sent = true
			}
		}
	}
}

func (s *server) logText() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	var b strings.Builder
	for _, r := range s.logs {
		j, _ := json.Marshal(r)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// kill ends the server and its stubs at the end of a test.
func (s *server) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.logMu.Lock()
	raced := s.raced
	s.logMu.Unlock()
	if raced {
		s.t.Errorf("the race detector reported a data race in the server")
	}
	if s.t.Failed() {
		s.t.Logf("server log:\n%s", s.logText())
	}
}

// response is one HTTP answer.
type response struct {
	Status int
	Body   []byte
	Header http.Header
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.Body)
	}
	return m
}

var client = &http.Client{Timeout: 30 * time.Second}

func (s *server) do(method, path string, body []byte, header ...string) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.HTTP+path, strings.NewReader(string(body)))
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Body: b, Header: resp.Header}
}

func (s *server) get(path string) response { return s.do("GET", path, nil) }

func (s *server) post(path, body string) response {
	return s.do("POST", path, []byte(body), "Content-Type", "application/json")
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes, and returns how long it took.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// waitReady waits until the server is ready.
func (s *server) waitReady(within time.Duration) {
	s.t.Helper()
	eventually(s.t, within, "server ready", func() bool { return s.get("/v2/health/ready").Status == 200 })
}

// healthJSON is /readyz?format=json decoded.
func (s *server) healthJSON() map[string]any {
	s.t.Helper()
	r := s.get("/readyz?format=json")
	return r.json(s.t)
}

// stubPIDs returns the PIDs of a model's stub processes: the server's
// children, matched to instances through the health JSON.
func (s *server) stubPIDs(model string) []int {
	s.t.Helper()
	var pids []int
	h := s.healthJSON()
	models, _ := h["models"].([]any)
	for _, m := range models {
		mm := m.(map[string]any)
		if mm["name"] != model {
			continue
		}
		for _, in := range mm["instances"].([]any) {
			if pid, ok := in.(map[string]any)["pid"].(float64); ok && pid > 0 {
				pids = append(pids, int(pid))
			}
		}
	}
	return pids
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
