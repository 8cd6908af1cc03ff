package ipc_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// clientObject is a memory file standing for a client's shared memory
// object, mapped here as the registry maps it.
func clientObject(t *testing.T, size int) (int, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("client-region", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return fd, mem
}

// Client regions reach the stub as their descriptors: the input is a
// read-only view of the region, an output goes straight into its room,
// one that is a view of the input is read back from the region, and every
// Hold taken for a batch is released once its reply is in, or at once when
// the batch was never sent.
func TestClientRegionsPassedAsDescriptors(t *testing.T) {
	t.Parallel()
	s := startLarge(t, 4096)
	inFD, inMem := clientObject(t, 1<<20)
	outFD, outMem := clientObject(t, 1<<20)
	x := fp32("X", ramp(100000, 3)...)
	copy(inMem[4096:], x.Data)
	var holds atomic.Int64
	hold := func() func() {
		holds.Add(1)
		return func() { holds.Add(-1) }
	}
	n := len(x.Data)
	in := tensor.Tensor{Name: "X", Datatype: tensor.FP32, Shape: x.Shape, Data: inMem[4096 : 4096+n],
		Shared: &tensor.Shared{FD: inFD, Offset: 4096, ID: 1, Mem: inMem[4096 : 4096+n], Hold: hold}}
	room := &tensor.Shared{FD: outFD, Offset: 8192, ID: 2, Mem: outMem[8192 : 8192+n], Hold: hold}

	req := &inference.Request{ID: "r", Inputs: []tensor.Tensor{in},
		Outputs: []inference.RequestedOutput{{Name: "X_OUT", Dest: room}, {Name: "WHERE"}}}
	results, err := s.Execute(ctxT(t), []*inference.Request{req})
	if err != nil || results[0].Err != nil {
		t.Fatal(err, results)
	}
	got := output(t, results[0].Response, "X_OUT")
	if !bytes.Equal(got.Data, x.Data) || unsafe.SliceData(got.Data) != unsafe.SliceData(room.Mem) {
		t.Errorf("X_OUT: right bytes %v, in the room %v", bytes.Equal(got.Data, x.Data), unsafe.SliceData(got.Data) == unsafe.SliceData(room.Mem))
	}
	if w := output(t, results[0].Response, "WHERE"); !bytes.Contains(w.Data, []byte("mmap read-only")) {
		t.Errorf("the model saw its input in %q, want a read-only mapping", w.Data)
	}
	if h := holds.Load(); h != 0 {
		t.Errorf("%d holds left after the reply", h)
	}

	// No room: the output, a view of the input, is read from the region.
	req = &inference.Request{ID: "v", Parameters: map[string]any{"view": true}, Inputs: []tensor.Tensor{in},
		Outputs: []inference.RequestedOutput{{Name: "X_OUT"}}}
	results, err = s.Execute(ctxT(t), []*inference.Request{req})
	if err != nil || results[0].Err != nil {
		t.Fatal(err, results)
	}
	if got := output(t, results[0].Response, "X_OUT"); !bytes.Equal(got.Data, x.Data) {
		t.Errorf("a view of the input came back different")
	}
	if h := holds.Load(); h != 0 {
		t.Errorf("%d holds left after the reply", h)
	}

	// A batch never sent (its caller gave up first) holds nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Execute(ctx, []*inference.Request{req}); err == nil {
		t.Fatal("execute with a cancelled context succeeded")
	}
	if h := holds.Load(); h != 0 {
		t.Errorf("%d holds left after a batch that was not sent", h)
	}
}

// A batch whose caller gave up after it was sent keeps its Holds while the
// stub may still use the regions: until the reply, or here the
// connection's end.
func TestClientRegionsHeldUntilTheReply(t *testing.T) {
	t.Parallel()
	s := startLarge(t, 4096)
	inFD, inMem := clientObject(t, 1<<20)
	var holds atomic.Int64
	hold := func() func() {
		holds.Add(1)
		return func() { holds.Add(-1) }
	}
	n := 1 << 19
	in := tensor.Tensor{Name: "X", Datatype: tensor.FP32, Shape: []int64{int64(n / 4)}, Data: inMem[:n],
		Shared: &tensor.Shared{FD: inFD, Offset: 0, ID: 1, Mem: inMem[:n], Hold: hold}}
	started := t.TempDir() + "/started"
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		_, err := s.Execute(ctx, []*inference.Request{{ID: "slow", Parameters: map[string]any{"started": started}, Inputs: []tensor.Tensor{in}}})
		done <- err
	}()
	waitFile(t, started)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the abandoned execute succeeded")
	}
	if h := holds.Load(); h != 1 {
		t.Fatalf("%d holds after the caller gave up with the stub still running, want 1", h)
	}
	s.Close()
	if h := holds.Load(); h != 0 {
		t.Errorf("%d holds after the connection ended, want 0", h)
	}
}
