// Package pythontest gives tests the Python interpreter to run stubs with:
// $VIGIL_PYTHON, else python3 on PATH, resolved to an absolute path and
// checked for numpy as the server does (python.Resolve).
package pythontest

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/vigilhq/vigil/python"
)

// resolved is resolved once per test binary: the environment does not
// change, and each resolution starts an interpreter.
var resolved = sync.OnceValues(func() (string, error) {
	name := os.Getenv("VIGIL_PYTHON")
	if name == "" {
		name = "python3"
	}
	return python.Resolve(context.Background(), name)
})

// Interpreter returns the interpreter's absolute path, or skips tb when
// there is none with numpy.
func Interpreter(tb testing.TB) string {
	tb.Helper()
	exe, err := resolved()
	if err != nil {
		tb.Skipf("no python with numpy to run stubs with: %v", err)
	}
	return exe
}

// Runtime returns the interpreter and the stub runtime installed into a
// temporary directory of tb (the PYTHONPATH a stub needs).
func Runtime(tb testing.TB) (exe, pythonPath string) {
	tb.Helper()
	exe = Interpreter(tb)
	pythonPath, err := python.Install(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return exe, pythonPath
}
