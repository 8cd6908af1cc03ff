package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Triton is run from the nvidia-pytriton wheel (make bench-peers installs
// it into a virtual environment of its own): the wheel carries the
// tritonserver binary, its libraries and the Python backend, with one
// backend stub per Python minor version.
//
// The stub embeds libpython and ignores PYTHONPATH; its interpreter finds
// its prefix by looking python3 up on PATH, so the venv's bin directory goes
// first on PATH and the venv's numpy is the one the stub imports. The
// venv's own libpython directory goes on LD_LIBRARY_PATH after the wheel's
// libraries, so that the stub's libpython matches the venv's standard
// library.

// tritonServer is a running Triton.
type tritonServer struct {
	cmd        *exec.Cmd
	http, grpc string
	exited     chan struct{}
	log        *logBuffer
}

// logBuffer collects a child's output; safe to read while it writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tritonLayout is what the venv's interpreter says about the wheel.
type tritonLayout struct {
	pkg     string // .../site-packages/pytriton
	version string // "3.11"
	libdir  string // the interpreter's LIBDIR (libpython)
}

func tritonPaths(ctx context.Context, venv string) (tritonLayout, error) {
	py := filepath.Join(venv, "bin", "python3")
	out, err := exec.CommandContext(ctx, py, "-c",
		"import os, sys, sysconfig, pytriton; print(os.path.dirname(pytriton.__file__)); "+
			"print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_config_var('LIBDIR') or '')").Output()
	if err != nil {
		return tritonLayout{}, fmt.Errorf("%s cannot import pytriton (run make bench-peers, which installs nvidia-pytriton): %w", py, err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(f) != 3 {
		return tritonLayout{}, fmt.Errorf("unexpected answer from %s: %q", py, out)
	}
	return tritonLayout{pkg: f[0], version: f[1], libdir: f[2]}, nil
}

// startTriton serves repo with Triton on free ports of 127.0.0.1. work is a
// directory for the backend layout Triton wants (the stub next to the
// backend library).
func startTriton(ctx context.Context, venv, repo, work string) (*tritonServer, error) {
	venv, err := filepath.Abs(venv)
	if err != nil {
		return nil, err
	}
	lay, err := tritonPaths(ctx, venv)
	if err != nil {
		return nil, err
	}
	dist := filepath.Join(lay.pkg, "tritonserver")
	backend := filepath.Join(work, "backends", "python")
	if err := os.MkdirAll(backend, 0o755); err != nil {
		return nil, err
	}
	for dst, src := range map[string]string{
		"libtriton_python.so":            filepath.Join(dist, "backends", "python", "libtriton_python.so"),
		"triton_python_backend_utils.py": filepath.Join(dist, "backends", "python", "triton_python_backend_utils.py"),
		"triton_python_backend_stub":     filepath.Join(dist, "python_backend_stubs", lay.version, "triton_python_backend_stub"),
	} {
		if err := copyFile(src, filepath.Join(backend, dst)); err != nil {
			return nil, fmt.Errorf("triton backend layout: %w", err)
		}
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	libs := filepath.Join(filepath.Dir(lay.pkg), "nvidia_pytriton.libs")
	if lay.libdir != "" {
		libs += ":" + lay.libdir
	}
	cmd := exec.Command(filepath.Join(dist, "bin", "tritonserver"),
		"--model-repository="+repo, "--backend-directory="+filepath.Join(work, "backends"),
		"--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
		"--http-port="+strconv.Itoa(ports[0]), "--grpc-port="+strconv.Itoa(ports[1]),
		"--allow-metrics=false", "--exit-timeout-secs=5", "--log-verbose=0")
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(venv, "bin")+":"+os.Getenv("PATH"), "LD_LIBRARY_PATH="+libs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	t := &tritonServer{cmd: cmd, exited: make(chan struct{}), log: &logBuffer{},
		http: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), grpc: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	cmd.Stdout, cmd.Stderr = t.log, t.log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start tritonserver: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		close(t.exited)
	}()
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-t.exited:
			return nil, fmt.Errorf("tritonserver exited before it was ready:\n%s", tail(t.log.String(), 30))
		default:
		}
		if r, err := http.Get(t.http + "/v2/health/ready"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return t, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.stop()
	return nil, fmt.Errorf("tritonserver not ready within 2m:\n%s", tail(t.log.String(), 30))
}

func (t *tritonServer) pid() int { return t.cmd.Process.Pid }

func (t *tritonServer) stop() {
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
		<-t.exited
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// freePorts returns n ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
