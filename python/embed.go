// Package python holds vigil's embedded Python runtime: the vigil_stub
// package, which runs one model instance per process, and the
// triton_python_backend_utils module models import. The server writes them
// to disk with Install and starts each stub as
//
//	<python> <Args(nice)...>
//
// with the installed directory on PYTHONPATH and its sockets as fds 3
// (data) and 4 (control). The wire protocol is documented in internal/ipc.
package python

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

//go:embed vigil_stub/*.py triton_python_backend_utils.py
var runtime embed.FS

// Install writes the runtime under dir (created if needed) and returns the
// directory to put on PYTHONPATH. Files from an earlier Install are
// overwritten.
func Install(dir string) (pythonPath string, err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("install python runtime: %w", err)
	}
	err = fs.WalkDir(runtime, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(abs, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := runtime.ReadFile(path)
		if err != nil {
			return err
		}
		return writeFileAtomic(dst, data)
	})
	if err != nil {
		return "", fmt.Errorf("install python runtime in %s: %w", abs, err)
	}
	return abs, nil
}

// writeFileAtomic replaces path so that a stub starting concurrently never
// imports a half-written file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, 0o644)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// StubFD and ControlFD are the file descriptors on which the stub expects
// its data socket (INIT, EXECUTE, FINALIZE) and its control socket (PING,
// HEALTH): the first and second of exec.Cmd.ExtraFiles.
const (
	StubFD    = 3
	ControlFD = 4
)

// Args returns the interpreter arguments that start a stub on fds StubFD
// and ControlFD. A positive nice is added to the stub's nice value before
// it starts any thread, so all of the stub, and whatever the model starts,
// yields the CPU to the server under contention.
func Args(nice int) []string {
	args := []string{"-u", "-m", "vigil_stub", "--fd", strconv.Itoa(StubFD), "--control-fd", strconv.Itoa(ControlFD)}
	if nice != 0 {
		args = append(args, "--nice", strconv.Itoa(nice))
	}
	return args
}

// NameArgs are the arguments that name a stub's model, version and
// instance on its command line, so that ps and top say which stub serves
// what; the stub also sets its process name (comm) to "vigil:<instance>".
func NameArgs(model, version, instance string) []string {
	return []string{"--model", model, "--version", version, "--instance", instance}
}

// NumpyError reports an interpreter that cannot import numpy.
type NumpyError struct {
	Python string // the interpreter's absolute path
	Detail string // the interpreter's last line of output, e.g. "ModuleNotFoundError: No module named 'numpy'"
	Err    error  // the exec error
}

func (e *NumpyError) Error() string {
	return fmt.Sprintf("python %s: numpy is not importable: %s — install it with: %s -m pip install numpy",
		e.Python, e.Detail, e.Python)
}

func (e *NumpyError) Unwrap() error { return e.Err }

// Resolve turns an interpreter name, as given to --python, into the
// absolute path of the interpreter itself, by asking it for sys.executable
// (so that shims such as pyenv's are not paid for at every stub start), and
// checks that it imports numpy, the runtime's only dependency. An
// interpreter that cannot be run is an error; one that runs but lacks numpy
// gives its path and a *NumpyError that says how to install numpy.
func Resolve(ctx context.Context, name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("python %s: cannot run the interpreter: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "-c", "import sys\nprint(sys.executable, flush=True)\nimport numpy\n")
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err = cmd.Run()
	exe := strings.TrimSpace(stdout.String())
	if exe == "" || !filepath.IsAbs(exe) {
		exe, _ = filepath.Abs(path)
	}
	switch {
	case err == nil:
		return exe, nil
	case ctx.Err() != nil:
		return "", fmt.Errorf("python %s: checking for numpy: %w", name, ctx.Err())
	case stdout.Len() == 0:
		return "", fmt.Errorf("python %s: cannot run the interpreter: %w: %s", name, err, lastLine(stderr.String()))
	}
	detail := lastLine(stderr.String())
	if detail == "" {
		detail = err.Error()
	}
	return exe, &NumpyError{Python: exe, Detail: detail, Err: err}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
