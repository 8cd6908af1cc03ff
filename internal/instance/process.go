package instance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
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
	exitErr error
	state   *os.ProcessState

	mu       sync.Mutex
	intended bool // the server stopped it; its exit is not a failure
}

// startProcess starts a stub with one end of a socket pair as fd 3 and reaps
// it in one goroutine, which wg tracks.
func startProcess(rt Runtime, log *slog.Logger, wg *sync.WaitGroup) (*process, error) {
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

	out := &outputLog{log: log}
	calls := newStubCalls(rt, log)
	cmd := exec.Command(rt.Python, rt.Args...)
	// fd 3 is the data socket, fd 4 the control socket (python.Args).
	cmd.ExtraFiles = []*os.File{dataChild, controlChild}
	cmd.Env = rt.environ()
	cmd.Stdout = out
	cmd.Stderr = out
	// A process group of its own lets stop signal the stub and anything it
	// started; the death signal ends the stub if the server dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Output copying must not hold up the reap if a grandchild keeps the
	// pipes open.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		data.Close()
		control.Close()
		return nil, fmt.Errorf("cannot start stub %s: %w", rt.Python, err)
	}
	dataConn, err := net.FileConn(data)
	data.Close()
	if err != nil {
		control.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("cannot open stub socket: %w", err)
	}
	controlConn, err := net.FileConn(control)
	control.Close()
	if err != nil {
		dataConn.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("cannot open stub control socket: %w", err)
	}
	p := &process{
		log:    log,
		cmd:    cmd,
		client: ipc.NewClient(dataConn, controlConn, log, ipc.WithStubCalls(calls)),
		out:    out,
		pid:    cmd.Process.Pid,
		done:   make(chan struct{}),
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := cmd.Wait()
		// Whatever the model started in the stub's process group goes with
		// it (the group outlives its leader while members remain).
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		p.exitErr = err
		p.state = cmd.ProcessState
		_ = p.client.Close()
		calls.close()
		close(p.done)
	}()
	return p, nil
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
	st := p.state
	if st == nil {
		return fmt.Sprintf("wait failed: %v", p.exitErr), -1, ""
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig := ws.Signal()
		name := signalName(sig)
		return "killed by signal " + name, -1, name
	}
	return fmt.Sprintf("exit code %d", st.ExitCode()), st.ExitCode(), ""
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
		if err != nil {
			p.log.Warn("finalize failed", "pid", p.pid, "err", err)
		}
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

// kill sends SIGKILL to the stub's process group.
func (p *process) kill() {
	p.markIntended()
	if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = p.cmd.Process.Kill()
	}
}
