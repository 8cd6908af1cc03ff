// Package responder answers the server's probes from a process of its own
// (--probe-port).
//
// Under full load no thread of the server process waits in epoll: a probe's
// bytes are found only when a P runs out of work, and the kernel hands the
// CPU to a busy process's threads no sooner than to anyone else's. A
// process that does nothing but answer probes is woken at once. So `vigil
// serve` starts `vigil probe-responder` as a child, hands it the probe
// port's listening socket, and sends it each health snapshot the moment the
// engine publishes one, and again every beat. The child serves the same
// health routes as --health-port with the same code (rest.NewHealthHandler)
// over the last snapshot it received: the answers are the server's, word
// for word.
//
// The child also tells what the server cannot: if no snapshot has arrived
// for StaleAfter (the server process is stopped or its runtime is wedged),
// its ping check fails, and with it liveness and readiness. When the
// server exits, the child sees its socket close and exits too; a child
// that dies is started again, with backoff, on the same listener.
package responder

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/health"
)

// Source is the health engine as the responder sees it.
type Source interface {
	Snapshot() *health.Snapshot
	Subscribe() (<-chan struct{}, func())
}

// Config configures the responder.
type Config struct {
	// Exe is the vigil binary the child runs (os.Executable).
	Exe string
	// Listener is the probe port. The responder serves it from the child;
	// the caller keeps ownership and closes it after Close.
	Listener *net.TCPListener
	Source   Source
	// StaleAfter is how long the child goes without a snapshot before its
	// ping check fails; Beat is how often an unchanged snapshot is sent
	// again (well below StaleAfter).
	StaleAfter, Beat time.Duration
	HideReasons      bool
	// LogFormat is the child's --log-format; its logs go to the server's
	// standard error.
	LogFormat string
	// RTPriority, from 1 to MaxRTPriority, runs the child under SCHED_FIFO
	// at that priority (realtime.go); 0 leaves it to the normal scheduler.
	// The caller checks with CheckRealtime that the process may: a child
	// that cannot exits, and is started again with backoff.
	RTPriority int
	Logger     *slog.Logger
}

// Log keys.
const (
	logKeyPID = "pid"
	logKeyErr = "err"
)

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Responder keeps the child process running.
type Responder struct {
	cfg    Config
	lis    *os.File
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start starts the child and the goroutine that supervises it.
func Start(cfg Config) (*Responder, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	lis, err := cfg.Listener.File() // a duplicate the child inherits
	if err != nil {
		return nil, fmt.Errorf("probe responder: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Responder{cfg: cfg, lis: lis, cancel: cancel}
	r.wg.Add(1)
	go r.supervise(ctx)
	return r, nil
}

// Close stops the child and waits for it.
func (r *Responder) Close() {
	r.cancel()
	r.wg.Wait()
	r.lis.Close()
}

// supervise runs the child until Close, starting it again when it exits.
func (r *Responder) supervise(ctx context.Context) {
	defer r.wg.Done()
	backoff := minBackoff
	for {
		began := time.Now()
		err := r.runChild(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*maxBackoff {
			backoff = minBackoff
		}
		r.cfg.Logger.Warn("probe responder exited; starting it again", logKeyErr, err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// runChild starts one child and feeds it snapshots until it exits or ctx
// ends (then it is killed).
func (r *Responder) runChild(ctx context.Context) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "responder"), os.NewFile(uintptr(fds[1]), "responder-child")
	args := []string{"probe-responder", "--stale-after", r.cfg.StaleAfter.String(), "--log-format", r.cfg.LogFormat}
	if r.cfg.HideReasons {
		args = append(args, "--health-hide-reasons")
	}
	if r.cfg.RTPriority != 0 {
		args = append(args, "--rt-priority", strconv.Itoa(r.cfg.RTPriority))
	}
	cmd := exec.Command(r.cfg.Exe, args...)
	cmd.ExtraFiles = []*os.File{theirs, r.lis} // fds 3 and 4
	cmd.Stderr = os.Stderr
	// The child's socket closing is what ends it; this is for a server
	// killed before it could close anything.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return fmt.Errorf("start %s: %w", r.cfg.Exe, err)
	}
	r.cfg.Logger.Debug("probe responder started", logKeyPID, cmd.Process.Pid)
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	published := make(chan error, 1)
	go func() { published <- Publish(ctx, conn, r.cfg.Source, r.cfg.Beat) }()
	// Whichever ends first, the child is stopped and both goroutines are
	// waited for (a result taken here goes back for that).
	var why error
	select {
	case <-ctx.Done():
	case err := <-exited:
		exited <- err
		why = fmt.Errorf("probe responder (pid %d) exited: %w", cmd.Process.Pid, err)
	case err := <-published:
		published <- err
		why = fmt.Errorf("sending health to the probe responder: %v", err)
	}
	_ = cmd.Process.Kill() // nothing if it has exited
	<-exited
	conn.Close() // ends a Publish blocked on a write
	<-published
	return why
}

// Publish writes src's snapshot to w, one JSON document per line, now,
// whenever src publishes another, and every beat, until ctx ends (nil) or
// a write fails.
func Publish(ctx context.Context, w io.Writer, src Source, beat time.Duration) error {
	changed, unsubscribe := src.Subscribe()
	defer unsubscribe()
	t := time.NewTicker(beat)
	defer t.Stop()
	enc := json.NewEncoder(w)
	for {
		if err := enc.Encode(src.Snapshot()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changed:
			if !ok {
				return nil
			}
		case <-t.C:
		}
	}
}
