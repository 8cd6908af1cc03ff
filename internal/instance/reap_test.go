package instance

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// reaped is a started child with its reaper running.
type reaped struct {
	p      *process
	pauses chan Pause
	done   chan struct{}
}

func startReaped(t *testing.T) *reaped {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	r := &reaped{p: &process{pid: cmd.Process.Pid}, pauses: make(chan Pause, 8), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.p.reap(func(p Pause) { r.pauses <- p })
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(r.p.pid, syscall.SIGKILL)
		<-r.done
	})
	return r
}

func (r *reaped) pause(t *testing.T, what string) Pause {
	t.Helper()
	select {
	case p := <-r.pauses:
		return p
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no report within 10s", what)
		return Pause{}
	}
}

// Signals to many children at once coalesce into fewer SIGCHLDs; every
// reaper must still see each of its own child's changes, and its end.
func TestReapSeesEveryChangeOfManyChildren(t *testing.T) {
	const n = 8
	rs := make([]*reaped, n)
	for i := range rs {
		rs[i] = startReaped(t)
	}
	for _, r := range rs {
		_ = syscall.Kill(r.p.pid, syscall.SIGSTOP)
	}
	for i, r := range rs {
		if p := r.pause(t, "stop"); !p.Stopped || p.Signal != "SIGSTOP" {
			t.Fatalf("child %d: %+v, want stopped by SIGSTOP", i, p)
		}
	}
	for _, r := range rs {
		_ = syscall.Kill(r.p.pid, syscall.SIGCONT)
	}
	for i, r := range rs {
		if p := r.pause(t, "continue"); p.Stopped {
			t.Fatalf("child %d: %+v, want continued", i, p)
		}
	}
	for _, r := range rs {
		_ = syscall.Kill(r.p.pid, syscall.SIGKILL)
	}
	for i, r := range rs {
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("child %d: not reaped within 10s of SIGKILL", i)
		}
		if r.p.waitErr != nil || !r.p.status.Signaled() || r.p.status.Signal() != syscall.SIGKILL {
			t.Fatalf("child %d: status %v, err %v; want killed by SIGKILL", i, r.p.status, r.p.waitErr)
		}
	}
}

// A child that has already exited when its reaper starts (no SIGCHLD will
// come) is reaped by the first, unprompted wait4.
func TestReapOfAChildThatExitedFirst(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start true: %v", err)
	}
	// Until the child is a zombie: a non-reaping wait for its exit.
	var info unix.Siginfo
	for {
		if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != syscall.EINTR {
			break
		}
	}
	p := &process{pid: cmd.Process.Pid}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.reap(nil)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an exited child was not reaped within 10s")
	}
	if p.waitErr != nil || !p.status.Exited() || p.status.ExitStatus() != 0 {
		t.Fatalf("status %v, err %v; want exit code 0", p.status, p.waitErr)
	}
}
