package ipc

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// MemObject is a memory file of size bytes holding fill, mapped here as the
// registry maps a client's shared memory object (exported for the tests of
// package ipc_test).
func MemObject(t *testing.T, size int, fill byte) (int, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("region", unix.MFD_CLOEXEC)
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
	for i := range mem {
		mem[i] = fill
	}
	return fd, mem
}

func TestRegionTable(t *testing.T) {
	inFD, inMem := MemObject(t, 8192, 5)
	outFD, outMem := MemObject(t, 8192, 0)
	held, released := 0, 0
	hold := func() func() {
		held++
		return func() { released++ }
	}
	a := &tensor.Shared{FD: inFD, Offset: 1024, ID: 7, Mem: inMem[1024:2048], Hold: hold}
	b := &tensor.Shared{FD: inFD, Offset: 4096, ID: 7, Mem: inMem[4096:5120], Hold: hold}
	room := &tensor.Shared{FD: outFD, Offset: 512, ID: 8, Mem: outMem[512:1536], Hold: hold}
	reqs := []*inference.Request{{
		Inputs: []tensor.Tensor{
			{Name: "A", Datatype: tensor.Uint8, Shape: []int64{1024}, Data: a.Mem, Shared: a},
			{Name: "B", Datatype: tensor.Uint8, Shape: []int64{1024}, Data: b.Mem, Shared: b},
		},
		Outputs: []inference.RequestedOutput{{Name: "O", Dest: room}, {Name: "P"}},
	}}
	rt := collectRegions(reqs)
	if rt == nil || len(rt.entries) != 2 || held != 3 {
		t.Fatalf("table %+v, %d holds; want one entry per object and a hold per tensor", rt, held)
	}
	rt.base = 1
	if got := rt.fds(); len(got) != 2 || got[0] != inFD || got[1] != outFD {
		t.Errorf("fds = %v", got)
	}
	meta := rt.appendMeta(nil)
	if len(meta) != rt.metaSize() || binary.LittleEndian.Uint32(meta) != 2 ||
		binary.LittleEndian.Uint32(meta[4:]) != 1 || binary.LittleEndian.Uint64(meta[8:]) != 7 || meta[16] != accessRead ||
		binary.LittleEndian.Uint32(meta[17:]) != 2 || binary.LittleEndian.Uint64(meta[21:]) != 8 || meta[29] != accessWrite {
		t.Errorf("region table meta %v", meta)
	}
	if d := rt.appendDest(nil, room); binary.LittleEndian.Uint32(d) != 2 || binary.LittleEndian.Uint64(d[4:]) != 512 || binary.LittleEndian.Uint64(d[12:]) != 1024 {
		t.Errorf("room record %v", d)
	}
	if d := rt.appendDest(nil, nil); len(d) != 20 || binary.LittleEndian.Uint32(d) != noDest {
		t.Errorf("no-room record %v", d)
	}

	// An output written into its room is the server's mapping of it.
	got, err := rt.regionData(2, 512, 100, 0)
	if err != nil || unsafe.SliceData(got) != unsafe.SliceData(room.Mem) || len(got) != 100 {
		t.Errorf("written output: %v, aliases the room %v", err, err == nil && unsafe.SliceData(got) == unsafe.SliceData(room.Mem))
	}
	// A view of an input is read from the object.
	if got, err := rt.regionData(1, 4096+10, 20, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{5}, 20)) {
		t.Errorf("input view: %v %v", got, err)
	}
	for _, tc := range []struct {
		idx       int
		off, size uint64
		want      string
	}{
		{0, 0, 1, "which is no client region"},
		{3, 0, 1, "which is no client region"},
		{2, 512, 1025, "outside every output room"},
		{2, 0, 10, "outside every output room"},
		{1, 2048, 1, "outside every input"},
		{1, 1024, 1 << 40, "outside every input"},
	} {
		if _, err := rt.regionData(tc.idx, tc.off, tc.size, 0); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("regionData(%d, %d, %d) = %v, want %q", tc.idx, tc.off, tc.size, err, tc.want)
		}
	}
	rt.release(true)
	rt.release(true)
	if released != 3 {
		t.Errorf("%d holds released, want 3", released)
	}

	// Encoded: the inputs point at their region, nothing of theirs in the frame.
	bufs, n, used, err := encodeExecuteArena(reqs, DefaultShmThreshold, nil, rt)
	if err != nil || used || len(bufs) != 1 {
		t.Fatalf("encode: %d buffers, used %v, %v", len(bufs), used, err)
	}
	if n != len(bufs[0])-headerSize {
		t.Errorf("body length %d for a %d-byte meta", n, len(bufs[0])-headerSize)
	}
	if largeInputBytes(reqs, 512, true) != 0 || largeInputBytes(reqs, 512, false) == 0 {
		t.Errorf("shared inputs were counted for the input arena")
	}
}

// A reused memory file (Shared.Kept set, a large HTTP body's) is a region
// of access 2: a view of the same request's input in it is its bytes, of
// another request's a copy, and a reply without flagFilesReleased marks it
// kept.
func TestReusedFileRegion(t *testing.T) {
	fd, mem := MemObject(t, 8192, 3)
	kept := 0
	share := func(off int) *tensor.Shared {
		return &tensor.Shared{FD: fd, Offset: uint64(off), ID: 1 << 62, Mem: mem[off : off+1024],
			Hold: func() func() { return func() {} }, Kept: func() { kept++ }}
	}
	a, b := share(0), share(4096)
	reqs := []*inference.Request{
		{Inputs: []tensor.Tensor{{Name: "A", Datatype: tensor.Uint8, Shape: []int64{1024}, Data: a.Mem, Shared: a}}},
		{Inputs: []tensor.Tensor{{Name: "B", Datatype: tensor.Uint8, Shape: []int64{1024}, Data: b.Mem, Shared: b}}},
	}
	rt := collectRegions(reqs)
	if len(rt.entries) != 1 || rt.entries[0].access != accessFile {
		t.Fatalf("entries %+v, want one of access %d", rt.entries, accessFile)
	}
	if meta := rt.appendMeta(nil); meta[16] != accessFile {
		t.Errorf("region table meta %v: access %d", meta, meta[16])
	}
	own, err := rt.regionData(0, 10, 100, 0)
	if err != nil || unsafe.SliceData(own) != &mem[10] {
		t.Errorf("a view of the request's own input: %v, aliases the file %v", err, err == nil && unsafe.SliceData(own) == &mem[10])
	}
	other, err := rt.regionData(0, 4096, 100, 0)
	if err != nil || unsafe.SliceData(other) == &mem[4096] || !bytes.Equal(other, mem[4096:4196]) {
		t.Errorf("a view of another request's input must be a copy: %v", err)
	}
	rt.release(true)
	if kept != 0 {
		t.Fatalf("released files were marked kept %d times", kept)
	}
	rt = collectRegions(reqs)
	rt.release(false)
	if kept != 2 {
		t.Fatalf("a reply without flagFilesReleased marked %d views kept, want 2", kept)
	}
}
