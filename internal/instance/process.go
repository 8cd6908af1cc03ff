package instance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/internal/custommetric"
	"github.com/vigilhq/vigil/internal/ipc"
)

// Runtime says how to start a stub process.
type Runtime struct {
	// Python is the interpreter's absolute path.
	Python string
	// PythonPath is the directory holding the embedded stub runtime.
	PythonPath string
	// Args follow the interpreter on the command line.
	Args []string
	// Env is added to the server's environment.
	Env []string
	// Metrics receives the metrics models create (pb_utils.MetricFamily);
	// nil refuses them.
	Metrics *custommetric.Registry
	// LogVerbose writes the models' pb_utils.Logger VERBOSE records.
	LogVerbose bool
	// Unset are variables of the server's environment the stub does not
	// get (an execution environment unsets PYTHONHOME).
	Unset []string
	// Name, when set, gives the arguments that follow Args to name the
	// stub's model and instance (python.NameArgs).
	Name func(model, version, instance string) []string
}

// environ is the environment of a stub process: the server's without
// rt.Unset, then rt.Env, then the runtime's PYTHONPATH.
func (rt Runtime) environ() []string {
	base := os.Environ()
	env := make([]string, 0, len(base)+len(rt.Env)+2)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(rt.Unset, k) {
			env = append(env, kv)
		}
	}
	env = append(env, rt.Env...)
	return append(env, "PYTHONPATH="+joinPath(rt.PythonPath, os.Getenv("PYTHONPATH")), "PYTHONUNBUFFERED=1")
}

// process is one generation of an instance: a started stub, its control
// connection and the goroutine that reaps it.
type process struct {
	log    *slog.Logger
	cmd    *exec.Cmd
	client *ipc.Client
	out    *outputLog
	pid    int

	done chan struct{} // closed once the process has been reaped
	// Set before done is closed.
	status  syscall.WaitStatus
	waitErr error

	mu       sync.Mutex
	intended bool // the server stopped it; its exit is not a failure
	reaped   bool // the reaper has closed (or will not see) the client
}

// Pause is a change of a stub's run state that the reaper saw: stopped by a
// signal (SIGSTOP, SIGTSTP, …) or continued (SIGCONT).
type Pause struct {
	Stopped bool
	Signal  string // the stop signal; empty for a continue
}

// startProcess starts a stub with one end of a socket pair as fd 3 and reaps
// it in one goroutine, which wg tracks. onPause, when set, is called from the
// reaper each time the stub is stopped or continued.
func startProcess(rt Runtime, log *slog.Logger, wg *sync.WaitGroup, onPause func(Pause)) (*process, error) {
	data, dataChild, err := socketPair("stub-data")
	if err != nil {
		return nil, err
	}
	control, controlChild, err := socketPair("stub-control")
	if err != nil {
		data.Close()
		dataChild.Close()
		return nil, err
	}
	defer dataChild.Close()
	defer controlChild.Close()
	// The stub's output goes to a pipe this package reads itself: the
	// reaper waits for the process with wait4 (to see stops and continues
	// too), so exec.Cmd.Wait, which would copy the output, is never called.
	outR, outW, err := os.Pipe()
	if err != nil {
		data.Close()
		control.Close()
		return nil, fmt.Errorf("cannot create the stub output pipe: %w", err)
	}

	out := &outputLog{log: log}
	calls := newLogMetricCalls(rt, log)
	cmd := exec.Command(rt.Python, rt.Args...)
	// fd 3 is the data socket, fd 4 the control socket (python.Args).
	cmd.ExtraFiles = []*os.File{dataChild, controlChild}
	cmd.Env = rt.environ()
	cmd.Stdout = outW
	cmd.Stderr = outW
	// A process group of its own lets stop signal the stub and anything it
	// started; the death signal ends the stub if the server dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	outW.Close()
	if err != nil {
		outR.Close()
		data.Close()
		control.Close()
		return nil, fmt.Errorf("cannot start stub %s: %w", rt.Python, err)
	}
	p := &process{
		log:  log,
		cmd:  cmd,
		out:  out,
		pid:  cmd.Process.Pid,
		done: make(chan struct{}),
	}
	copied := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(copied)
		_, _ = io.Copy(out, outR)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.reap(onPause)
		// Whatever the model started in the stub's process group goes with
		// it (the group outlives its leader while members remain).
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		_ = cmd.Process.Release()
		// Output copying must not hold up the reap for long if a process
		// outside the group keeps the pipe open.
		select {
		case <-copied:
		case <-time.After(time.Second):
		}
		outR.Close()
		<-copied
		p.mu.Lock()
		p.reaped = true
		c := p.client
		p.mu.Unlock()
		if c != nil {
			_ = c.Close()
		}
		calls.close()
		close(p.done)
	}()

	dataConn, err := net.FileConn(data)
	data.Close()
	if err != nil {
		control.Close()
		p.kill()
		<-p.done
		return nil, fmt.Errorf("cannot open stub socket: %w", err)
	}
	controlConn, err := net.FileConn(control)
	control.Close()
	if err != nil {
		dataConn.Close()
		p.kill()
		<-p.done
		return nil, fmt.Errorf("cannot open stub control socket: %w", err)
	}
	client := ipc.NewClient(dataConn, controlConn, log, ipc.WithStubCalls(calls))
	p.mu.Lock()
	p.client = client
	if p.reaped {
		_ = client.Close() // the reaper has come and gone: nobody else will
	}
	p.mu.Unlock()
	return p, nil
}

// reap waits for the process to end, reporting every stop and continue on
// the way, so that a stop is an event as an exit is. It waits for SIGCHLD
// and then asks wait4 without blocking (WNOHANG, WUNTRACED, WCONTINUED)
// until the process has no state change left to report, rather than
// blocking in wait4: a goroutine blocked in a system call keeps its P
// until the runtime's monitor takes it back, up to 10 ms on an idle server,
// and with one P (internal/procs) the stop's report would wait that long
// behind the reaper's next wait4. SIGCHLD comes for any child and
// coalesces; every reaper then asks once for its own process.
func (p *process) reap(onPause func(Pause)) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	// Asked once before the first signal: a change before Notify sent
	// none to sigs.
	for !p.reportChanges(onPause) {
		<-sigs
	}
}

// reportChanges reports the process's state changes that wait4 has for it
// now, and whether it has ended (reaped, or wait4 failed).
func (p *process) reportChanges(onPause func(Pause)) (ended bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(p.pid, &ws, syscall.WNOHANG|syscall.WUNTRACED|syscall.WCONTINUED, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			p.waitErr = err
			return true
		case pid == 0:
			return false // no change left
		case ws.Exited() || ws.Signaled():
			p.status = ws
			return true
		case onPause == nil:
		case ws.Stopped():
			onPause(Pause{Stopped: true, Signal: signalName(ws.StopSignal())})
		case ws.Continued():
			onPause(Pause{})
		}
	}
}

// socketPair returns the server's and the stub's ends of a Unix stream
// socket pair.
func socketPair(name string) (parent, child *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot create %s socket: %w", name, err)
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name+"-child"), nil
}

func joinPath(a, b string) string {
	if b == "" {
		return a
	}
	return a + string(os.PathListSeparator) + b
}

// markIntended records that the server is stopping the process on purpose.
func (p *process) markIntended() {
	p.mu.Lock()
	p.intended = true
	p.mu.Unlock()
}

func (p *process) wasIntended() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.intended
}

// exited reports whether the process has been reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitDescription says how the process ended: "exit code 1" or
// "killed by signal SIGKILL". Only valid after done is closed.
func (p *process) exitDescription() (desc string, code int, signal string) {
	if p.waitErr != nil {
		return fmt.Sprintf("wait failed: %v", p.waitErr), -1, ""
	}
	ws := p.status
	if ws.Signaled() {
		name := signalName(ws.Signal())
		return "killed by signal " + name, -1, name
	}
	return fmt.Sprintf("exit code %d", ws.ExitStatus()), ws.ExitStatus(), ""
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGBUS:
		return "SIGBUS"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	case syscall.SIGTSTP:
		return "SIGTSTP"
	case syscall.SIGTTIN:
		return "SIGTTIN"
	case syscall.SIGTTOU:
		return "SIGTTOU"
	}
	return strings.ToUpper(sig.String())
}

// stop ends the process: finalize within finalizeTimeout if asked and the
// stub still answers, then SIGTERM to the group, then SIGKILL after grace,
// and always waits for the reap so that two generations never overlap.
func (p *process) stop(ctx context.Context, finalize bool, finalizeTimeout, grace time.Duration) {
	p.markIntended()
	if p.exited() {
		return
	}
	if finalize {
		fctx, cancel := context.WithTimeout(ctx, finalizeTimeout)
		err := p.client.Finalize(fctx)
		cancel()
		p.logFinalize(err, finalizeTimeout)
		if err == nil {
			select {
			case <-p.done:
				return
			case <-time.After(grace):
			}
		}
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	case <-ctx.Done():
	}
	p.kill()
	<-p.done
}

// logFinalize logs how finalize went: a raise with its traceback at error
// level; a stub that was already gone at INFO, since that is no news at a
// shutdown (its exit, if unexpected, was reported when it happened).
func (p *process) logFinalize(err error, limit time.Duration) {
	switch {
	case err == nil:
	case logRaised(p.log, "finalize", p.pid, err):
	case errors.Is(err, ipc.ErrClosed) || p.exited():
		p.log.Info("stub had already exited: no finalize", "pid", p.pid)
	case errors.Is(err, context.DeadlineExceeded):
		p.log.Warn("finalize did not return in time: stopping the stub", "pid", p.pid, "finalize_timeout", limit.String())
	default:
		p.log.Warn("finalize failed", "pid", p.pid, "err", err)
	}
}

// kill sends SIGKILL to the stub's process group.
func (p *process) kill() {
	p.markIntended()
	if p.exited() {
		return
	}
	if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}
