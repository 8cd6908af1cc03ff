package ipc_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
	"github.com/vigilhq/vigil/python"
	"github.com/vigilhq/vigil/python/pythontest"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer collects the stub's output for failure messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// stub is a running stub process and the client talking to it.
type stub struct {
	*ipc.Client
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait has returned
	out    *syncBuffer
	model  string // absolute path of model.py
}

type stubOptions struct {
	extraPythonPath string // put before the runtime on PYTHONPATH
	calls           ipc.StubCalls
}

// startStub starts a stub for testdata/models/<model>/1/model.py without
// initializing it. Cleanup closes the client, kills the process if it is
// still running and waits for it.
func startStub(t testing.TB, model string, opts stubOptions) *stub {
	t.Helper()
	py := pythontest.Interpreter(t)
	rt, err := python.Install(filepath.Join(t.TempDir(), "runtime"))
	if err != nil {
		t.Fatal(err)
	}
	modelFile, err := filepath.Abs(filepath.Join("testdata", "models", model, "1", "model.py"))
	if err != nil {
		t.Fatal(err)
	}

	pair := func() (net.Conn, *os.File) {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		parent := os.NewFile(uintptr(fds[0]), "stub-parent")
		child := os.NewFile(uintptr(fds[1]), "stub-child")
		conn, err := net.FileConn(parent)
		parent.Close()
		if err != nil {
			child.Close()
			t.Fatal(err)
		}
		return conn, child
	}
	conn, child := pair()
	control, controlChild := pair()

	pp := rt
	if opts.extraPythonPath != "" {
		pp = opts.extraPythonPath + string(os.PathListSeparator) + rt
	}
	out := &syncBuffer{}
	cmd := exec.Command(py, python.Args(0)...)
	cmd.ExtraFiles = []*os.File{child, controlChild}
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pp, "PYTHONDONTWRITEBYTECODE=1")
	cmd.Stdout = out
	cmd.Stderr = out
	err = cmd.Start()
	child.Close()
	controlChild.Close()
	if err != nil {
		conn.Close()
		control.Close()
		t.Fatal(err)
	}
	// Benchmarks log only what goes wrong, so that their output stays a table.
	level := slog.LevelDebug
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn
	}
	s := &stub{
		Client: ipc.NewClient(conn, control, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level})),
			ipc.WithStubCalls(opts.calls)),
		cmd:    cmd,
		exited: make(chan struct{}),
		out:    out,
		model:  modelFile,
	}
	go func() {
		defer close(s.exited)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = s.Client.Close()
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("stub output:\n%s", out.String())
		}
	})
	return s
}

// testWriter sends client logs to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (s *stub) initArgs(name string) ipc.InitArgs {
	return ipc.InitArgs{
		ModelFile:       s.model,
		ModelName:       name,
		ModelVersion:    "1",
		ModelRepository: filepath.Dir(filepath.Dir(s.model)),
		InstanceName:    name + "_0",
		InstanceKind:    "CPU",
		DeviceID:        0,
		ModelConfigJSON: `{"name":"` + name + `","backend":"python","output":[{"name":"OUT","data_type":"TYPE_FP32","dims":[1]}]}`,
	}
}

// startModel starts a stub and initializes its model.
func startModel(t testing.TB, model string) (*stub, ipc.InitResult) {
	t.Helper()
	s := startStub(t, model, stubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	res, err := s.Init(ctx, s.initArgs(model))
	if err != nil {
		t.Fatalf("init %s: %v", model, err)
	}
	return s, res
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func fp32(name string, vals ...float32) tensor.Tensor {
	data := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return tensor.Tensor{Name: name, Datatype: tensor.FP32, Shape: []int64{int64(len(vals))}, Data: data}
}

func floats(t testing.TB, tt tensor.Tensor) []float32 {
	t.Helper()
	if tt.Datatype != tensor.FP32 {
		t.Fatalf("tensor %s is %s, want FP32", tt.Name, tt.Datatype)
	}
	out := make([]float32, len(tt.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(tt.Data[4*i:]))
	}
	return out
}

func bytesTensor(name string, shape []int64, elems ...string) tensor.Tensor {
	var data []byte
	for _, e := range elems {
		data = tensor.AppendBytesElement(data, []byte(e))
	}
	return tensor.Tensor{Name: name, Datatype: tensor.Bytes, Shape: shape, Data: data}
}

func elements(t testing.TB, tt tensor.Tensor) []string {
	t.Helper()
	if tt.Datatype != tensor.Bytes {
		t.Fatalf("tensor %s is %s, want BYTES", tt.Name, tt.Datatype)
	}
	parts, err := tensor.SplitBytesElements(tt.Data)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}

func output(t testing.TB, r *inference.Response, name string) tensor.Tensor {
	t.Helper()
	for _, o := range r.Outputs {
		if o.Name == name {
			return o
		}
	}
	var names []string
	for _, o := range r.Outputs {
		names = append(names, o.Name)
	}
	t.Fatalf("response has no output %s (has %v)", name, names)
	return tensor.Tensor{}
}

// waitFile polls for path until the test deadline.
func waitFile(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %s", path, testTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFileContains polls path until it contains want.
func waitFileContains(t testing.TB, path, want string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come to contain %q within %s", path, want, testTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitClosed(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatalf("%s did not happen within %s", what, testTimeout)
	}
}

func isModelError(err error) *ipc.ModelError {
	var me *ipc.ModelError
	if errors.As(err, &me) {
		return me
	}
	return nil
}
