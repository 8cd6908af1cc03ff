package ipc_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// openFiles counts this process's open descriptors of memory files named
// name.
func openFiles(t *testing.T, name string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "/memfd:"+name+" ") {
			n++
		}
	}
	return n
}

// A batch whose requests take output files gets its large outputs as
// views of one memory file per response, made by the stub; small and
// BYTES outputs stay in the frame. Release closes the file.
func TestLargeOutputsInTheStubsOwnFiles(t *testing.T) {
	s := startLarge(t, 4096)
	mk := func(id string, from float32) *inference.Request {
		return &inference.Request{ID: id, OutputFiles: true, Inputs: []tensor.Tensor{fp32("BIG", ramp(300000, from)...), fp32("SMALL", 1, 2)}}
	}
	reqs := []*inference.Request{mk("a", 0), mk("b", 5)}
	before := openFiles(t, "vigil-bls-out")
	results, err := s.Execute(ctxT(t), reqs)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for i, r := range results {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		big := output(t, r.Response, "BIG_OUT")
		if !bytes.Equal(big.Data, reqs[i].Inputs[0].Data) {
			t.Fatalf("request %d: BIG_OUT came back different", i)
		}
		if big.Shared == nil {
			t.Fatalf("request %d: BIG_OUT is not a view of a memory file", i)
		}
		if small := output(t, r.Response, "SMALL_OUT"); small.Shared != nil {
			t.Errorf("request %d: a small output is out of band", i)
		}
		if where := output(t, r.Response, "WHERE"); where.Shared != nil {
			t.Errorf("request %d: a BYTES output is out of band", i)
		}
		fds = append(fds, big.Shared.FD)
	}
	if fds[0] == fds[1] {
		t.Fatal("two responses share one file")
	}
	if got := openFiles(t, "vigil-bls-out"); got != before+2 {
		t.Fatalf("%d output files open, want %d", got, before+2)
	}
	for _, r := range results {
		r.Response.Done()
	}
	if got := openFiles(t, "vigil-bls-out"); got != before {
		t.Fatalf("%d output files open after Release, want %d", got, before)
	}
	// Without the flag, the arenas as before.
	reqs[0].OutputFiles = false
	results, err = s.Execute(ctxT(t), reqs[:1])
	if err != nil || results[0].Err != nil {
		t.Fatal(err, results)
	}
	if big := output(t, results[0].Response, "BIG_OUT"); big.Shared != nil || results[0].Response.Release != nil {
		t.Fatal("an output of a request without output files is a file view")
	}
}

// A BLS call's response whose outputs are Shared views reaches the caller
// stub as the file's descriptor; the response is released once sent.
func TestBLSResponsePassesSharedOutputs(t *testing.T) {
	t.Parallel()
	s, f := startCaller(t, "caller")
	n := 1 << 18
	in := fp32("INPUT0", ramp(n, 1)...)
	done := executeAsync(ctxT(t), s, &inference.Request{Model: "caller", Version: "1", ID: "big", Inputs: []tensor.Tensor{in}})
	call := f.nextInfer(t)
	if !call.Request.OutputFiles {
		t.Error("a call from a stub that receives descriptors does not take output files")
	}
	fd, err := unix.MemfdCreate("vigil-test-out", unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		t.Skipf("memfd_create: %v", err)
	}
	data := call.Request.Inputs[0].Data
	if _, err := unix.Pwrite(fd, data, 64); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, 64+len(data), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	var held, released atomic.Int32
	sh := &tensor.Shared{FD: fd, Offset: 64, ID: 1, Mem: mem[64:], Hold: func() func() {
		held.Add(1)
		return func() { held.Add(-1) }
	}}
	out := tensor.Tensor{Name: "OUT", Datatype: tensor.FP32, Shape: call.Request.Inputs[0].Shape, Data: sh.Mem, Shared: sh}
	resp := &inference.Response{Outputs: []tensor.Tensor{out}, Release: func() {
		released.Add(1)
		_ = unix.Munmap(mem)
		_ = unix.Close(fd)
	}}
	if !call.Respond(resp, nil, true) {
		t.Fatal("the response was not sent")
	}
	if released.Load() != 1 || held.Load() != 0 {
		t.Errorf("released %d times, %d holds left; want 1, 0", released.Load(), held.Load())
	}
	res := waitResult(t, done)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := output(t, res.Response, "OUT"); !bytes.Equal(got.Data, in.Data) {
		t.Fatal("the output came back different")
	}
	// Released when it could not be sent, too.
	if call.Respond(&inference.Response{Release: func() { released.Add(1) }}, nil, true) || released.Load() != 2 {
		t.Errorf("a response after the final one: released %d times, want 2", released.Load())
	}
}
