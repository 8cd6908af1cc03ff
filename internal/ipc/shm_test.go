package ipc_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// startLarge starts the large test model with tensors from threshold bytes
// out of band.
func startLarge(t *testing.T, threshold int) *stub {
	t.Helper()
	s := startStub(t, "large", stubOptions{})
	s.SetShmThreshold(threshold)
	if _, err := s.Init(ctxT(t), s.initArgs("large")); err != nil {
		t.Fatal(err)
	}
	return s
}

func ramp(n int, from float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = from + float32(i)
	}
	return v
}

// Not parallel: it counts the process's arenas.
func TestLargeTensorsTravelOutOfBand(t *testing.T) {
	s := startLarge(t, 4096)
	var words []string
	for i := range 2000 {
		words = append(words, strings.Repeat("w", i%7))
	}
	req := &inference.Request{ID: "big", Inputs: []tensor.Tensor{
		fp32("BIG", ramp(300000, 0)...), // 1.2 MB
		fp32("SMALL", 1, 2, 3),
		bytesTensor("WORDS", []int64{int64(len(words))}, words...),
	}}
	// Two requests in one batch share the arenas.
	req2 := &inference.Request{ID: "big2", Inputs: []tensor.Tensor{fp32("BIG", ramp(5000, 7)...)}}
	for round := range 3 { // the arenas are reused
		results, err := s.Execute(ctxT(t), []*inference.Request{req, req2})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range results {
			if r.Err != nil {
				t.Fatalf("round %d request %d: %v", round, i, r.Err)
			}
		}
		resp := results[0].Response
		for _, in := range req.Inputs {
			got := output(t, resp, in.Name+"_OUT")
			if !bytes.Equal(got.Data, in.Data) || !reflect.DeepEqual(got.Shape, in.Shape) {
				t.Errorf("round %d: %s came back different (%d bytes, want %d)", round, in.Name, len(got.Data), len(in.Data))
			}
		}
		// The large numeric input was a writable view of the arena's
		// mapping; the small one was in the frame.
		if got := elements(t, output(t, resp, "WHERE")); !reflect.DeepEqual(got, []string{"mmap writable", "FrameBody writable", "object"}) {
			t.Errorf("round %d: inputs seen by the model as %q", round, got)
		}
		if got := output(t, results[1].Response, "BIG_OUT"); !bytes.Equal(got.Data, req2.Inputs[0].Data) {
			t.Errorf("round %d: second request's tensor came back different", round)
		}
	}
	// Two arenas in the server, at most two mapped in the stub, however
	// many batches went through.
	if n := serverArenas(t); n > 2 {
		t.Errorf("%d arenas open in the server", n)
	}
	if n := stubArenas(t, s.cmd.Process.Pid); n > 2 {
		t.Errorf("%d arenas mapped in the stub", n)
	}
}

// A model that keeps its input arrays past execute keeps what it was sent:
// the server gives up that arena instead of writing the next batch into it.
func TestKeptInputsAreNotOverwritten(t *testing.T) {
	t.Parallel()
	s := startLarge(t, 4096)
	first := fp32("A", ramp(100000, 1)...)
	run := func(params map[string]any, in tensor.Tensor) *inference.Response {
		t.Helper()
		results, err := s.Execute(ctxT(t), []*inference.Request{{Parameters: params, Inputs: []tensor.Tensor{in}}})
		if err != nil || results[0].Err != nil {
			t.Fatal(err, results)
		}
		return results[0].Response
	}
	run(map[string]any{"keep": true}, first)
	resp := run(map[string]any{"kept": true}, fp32("A", ramp(100000, 5000)...))
	if got := output(t, resp, "KEPT_A"); !bytes.Equal(got.Data, first.Data) {
		t.Error("an input array the model kept changed under it")
	}
}

func TestLargeTensorsThroughTheSocketWhenDisabled(t *testing.T) {
	t.Parallel()
	s := startLarge(t, 0)
	results, err := s.Execute(ctxT(t), []*inference.Request{{Inputs: []tensor.Tensor{fp32("BIG", ramp(100000, 0)...)}}})
	if err != nil || results[0].Err != nil {
		t.Fatal(err, results)
	}
	if got := elements(t, output(t, results[0].Response, "WHERE")); got[0] != "bytearray writable" {
		t.Errorf("input seen as %q, want the frame's bytearray", got)
	}
}

// A stub killed while it holds mapped inputs leaves nothing behind in the
// server once its client is closed (as the instance does on the reap): the
// stub's descriptors and mappings go with the process, and the kernel frees
// a memory file with its last reference.
//
// Not parallel: it counts the process's memory files.
func TestStubKilledHoldingRegionsLeaksNothing(t *testing.T) {
	s := startLarge(t, 4096)
	started := filepath.Join(t.TempDir(), "started")
	done := make(chan error, 1)
	go func() {
		_, err := s.Execute(context.Background(), []*inference.Request{{
			Parameters: map[string]any{"started": started},
			Inputs:     []tensor.Tensor{fp32("A", ramp(1<<18, 0)...), fp32("B", ramp(1<<18, 1)...)}}})
		done <- err
	}()
	waitFile(t, started)
	if n := stubArenas(t, s.cmd.Process.Pid); n < 1 {
		t.Errorf("the stub maps %d arenas while holding two inputs", n)
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("execute on a killed stub succeeded")
	}
	<-s.exited
	_ = s.Client.Close()
	if n := serverArenas(t); n != 0 {
		t.Errorf("%d arenas open in the server after the stub died", n)
	}
}

// serverArenas counts this process's open arena descriptors.
func serverArenas(t *testing.T) int {
	t.Helper()
	return openFiles(t, "vigil-arena")
}

// stubArenas counts the distinct arenas a process maps.
func stubArenas(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "maps"))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 6 && strings.HasPrefix(f[5], "/memfd:vigil-arena") {
			inodes[f[4]] = true
		}
	}
	return len(inodes)
}

// An output that is a view of an input (an identity model) is read from the
// input arena: it comes back whole.
func TestOutputViewOfInputArena(t *testing.T) {
	t.Parallel()
	s := startLarge(t, 4096)
	for round := range 2 {
		in := fp32("X", ramp(70000, float32(round))...)
		results, err := s.Execute(ctxT(t), []*inference.Request{{Parameters: map[string]any{"view": true}, Inputs: []tensor.Tensor{in, fp32("Y", ramp(2000, 3)...)}}})
		if err != nil || results[0].Err != nil {
			t.Fatal(err, results)
		}
		for _, want := range []tensor.Tensor{in} {
			if got := output(t, results[0].Response, want.Name+"_OUT"); !bytes.Equal(got.Data, want.Data) {
				t.Errorf("round %d: %s came back different", round, want.Name)
			}
		}
	}
}
