package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// vigilServer is the server under measurement.
type vigilServer struct {
	cmd        *exec.Cmd
	http, grpc string
	probes     string // base URL of --probe-port, when it was given
	exited     chan struct{}
}

// startServer starts `vigil serve` on repo and waits until it listens. bin
// is a command split at spaces: a binary, or one run through env(1) with
// settings of its own, e.g. "env GODEBUG=schedtrace=0 bin/vigil" (env
// execs the binary, so the process whose CPU time is read stays the same).
func startServer(bin, repo, python string, extra ...string) (*vigilServer, error) {
	command := strings.Fields(bin)
	if len(command) == 0 {
		return nil, fmt.Errorf("no vigil binary given")
	}
	args := slices.Concat(command[1:], []string{"serve", "--model-repository", repo, "--host", "127.0.0.1",
		"--http-port", "0", "--grpc-port", "0", "--log-format", "json",
		"--python", python, "--drain-delay", "0s"}, extra)
	wantProbes := slices.Contains(extra, "--probe-port")
	cmd := exec.Command(command[0], args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &vigilServer{cmd: cmd, exited: make(chan struct{})}
	addrs := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var rec struct{ Msg, Protocol, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Msg != "listening" {
				continue
			}
			switch rec.Protocol {
			case "http":
				s.http = "http://" + rec.Addr
			case "grpc":
				s.grpc = rec.Addr
			case "probes":
				s.probes = "http://" + rec.Addr
			}
			if s.http != "" && s.grpc != "" && (s.probes != "" || !wantProbes) && addrs != nil {
				close(addrs)
				addrs = nil
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	select {
	case <-addrs:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("vigil exited before listening")
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("vigil did not listen within 30s")
	}
}

func (s *vigilServer) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if r, err := http.Get(s.http + "/v2/health/ready"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("vigil not ready within %s", within)
}

func (s *vigilServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}
