package python_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/python"
	"github.com/vigilhq/vigil/python/pythontest"
)

func TestInstall(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "rt")
	for range 2 { // a second Install overwrites in place
		pp, err := python.Install(dir)
		if err != nil {
			t.Fatal(err)
		}
		if pp != dir {
			t.Errorf("python path = %s, want %s", pp, dir)
		}
	}
	for _, f := range []string{"triton_python_backend_utils.py", "vigil_stub/__init__.py", "vigil_stub/__main__.py", "vigil_stub/runtime.py", "vigil_stub/tensors.py", "vigil_stub/wire.py"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("installed runtime lacks %s: %v", f, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "vigil_stub"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestArgs(t *testing.T) {
	t.Parallel()
	if got := strings.Join(python.Args(0), " "); got != "-u -m vigil_stub --fd 3 --control-fd 4" {
		t.Errorf("Args(0) = %q", got)
	}
	if got := strings.Join(python.Args(5), " "); got != "-u -m vigil_stub --fd 3 --control-fd 4 --nice 5" {
		t.Errorf("Args(5) = %q", got)
	}
}

func TestStubUsage(t *testing.T) {
	t.Parallel()
	py := pythontest.Interpreter(t)
	dir, err := python.Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-m", "vigil_stub")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--fd is required") {
		t.Errorf("stub without --fd: %v, %s", err, out)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	py := pythontest.Interpreter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exe, err := python.Resolve(ctx, py)
	if err != nil || !filepath.IsAbs(exe) {
		t.Fatalf("Resolve(%s) = %q, %v; want an absolute path", py, exe, err)
	}

	// An interpreter whose numpy import fails: a wrapper that puts a
	// broken numpy first on PYTHONPATH.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "fake", "numpy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fake", "numpy", "__init__.py"), []byte("raise ImportError(\"No module named 'numpy'\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "python-without-numpy")
	script := "#!/bin/sh\nPYTHONPATH=" + filepath.Join(dir, "fake") + " exec " + py + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = python.Resolve(ctx, wrapper)
	var ne *python.NumpyError
	if !errors.As(err, &ne) {
		t.Fatalf("Resolve(no numpy) = %v, want *NumpyError", err)
	}
	for _, want := range []string{"python " + exe + ": numpy is not importable", "ImportError: No module named 'numpy'", exe + " -m pip install numpy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	_, err = python.Resolve(ctx, filepath.Join(dir, "no-such-python"))
	if err == nil || errors.As(err, &ne) || !strings.Contains(err.Error(), "cannot run the interpreter") {
		t.Errorf("Resolve(missing) = %v", err)
	}
}
