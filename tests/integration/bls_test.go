package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// relayed posts a request to relay (which calls sleepy through BLS) in the
// background.
func relayed(s *server, sleep float32) <-chan response {
	done := make(chan response, 1)
	go func() { done <- s.post("/v2/models/relay/infer", echoBody(sleep)) }()
	return done
}

// executingPID waits for sleepy's EXECUTING marker and returns the PID in it.
func executingPID(t *testing.T, repo string) int {
	t.Helper()
	marker := filepath.Join(repo, "sleepy", "EXECUTING")
	var pid int
	eventually(t, 10*time.Second, "sleepy executing", func() bool {
		b, err := os.ReadFile(marker)
		if err != nil || len(b) == 0 {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

func TestCalleeKilledMidCallGivesTheCallerItsInstanceAndExit(t *testing.T) {
	repo := copyModels(t, "relay", "sleepy")
	s := start(t, repo)
	s.waitReady(60 * time.Second)
	done := relayed(s, 0.8) // within sleepy's 1 s execute_timeout
	pid := executingPID(t, repo)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var r response
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the relayed request did not end after its callee was killed")
	}
	body := string(r.Body)
	if r.Status != 500 || !strings.Contains(body, "died while executing the request") || !strings.Contains(body, "SIGKILL") ||
		!strings.Contains(body, "sleepy_") {
		t.Fatalf("relay answered %d %s; want the callee's instance and exit in a 500", r.Status, body)
	}
	eventually(t, 20*time.Second, "sleepy back", func() bool { return s.get("/v2/models/sleepy/ready").Status == 200 })
	if r := s.post("/v2/models/relay/infer", echoBody(0)); r.Status != 200 {
		t.Fatalf("relay after sleepy's restart: %d %s", r.Status, r.Body)
	}
}

func TestCallerKilledMidCallLeavesTheServerServing(t *testing.T) {
	repo := copyModels(t, "relay", "sleepy")
	s := start(t, repo)
	s.waitReady(60 * time.Second)
	done := relayed(s, 0.8)
	executingPID(t, repo)
	pids := s.stubPIDs("relay")
	if len(pids) != 1 {
		t.Fatalf("relay stubs %v, want one", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.Status != 503 || !strings.Contains(string(r.Body), "relay_0") {
			t.Fatalf("relay answered %d %s; want 503 naming its dead instance", r.Status, r.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not end when its model's stub was killed")
	}
	// The request can end (the connection's EOF) before the exit is
	// reported: wait for the new process, not just for "ready".
	eventually(t, 20*time.Second, "relay back on a new process", func() bool {
		now := s.stubPIDs("relay")
		return len(now) == 1 && now[0] != pids[0] && s.get("/v2/models/relay/ready").Status == 200
	})
	if r := s.post("/v2/models/relay/infer", echoBody(0)); r.Status != 200 {
		t.Fatalf("relay after its restart: %d %s", r.Status, r.Body)
	}
}
