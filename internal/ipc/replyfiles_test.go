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

// fileOutput appends a response's output record pointing at descriptor idx
// at off, as a stub writing output files does.
func (r *replyBuilder) fileOutputs(outs ...fileOut) *replyBuilder {
	r.meta = append(r.meta, 0)
	r.meta = binary.LittleEndian.AppendUint32(r.meta, 0)
	r.meta = binary.LittleEndian.AppendUint32(r.meta, uint32(len(outs)))
	for _, o := range outs {
		r.meta = appendTensorRecord(r.meta, o.name, datatypeCodes[tensor.Uint8]|outOfBand, []int64{int64(o.size)}, o.size)
		r.meta = appendOutOfBand(r.meta, int(o.idx), o.off)
	}
	return r
}

type fileOut struct {
	name string
	idx  uint32
	off  uint64
	size int
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestReplyFileOutputsAreViewsOfTheFile(t *testing.T) {
	data := []byte("0123456789abcdef")
	fd := memFile(t, data, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE)
	body := newReply(1).fileOutputs(fileOut{"A", 0, 0, 4}, fileOut{"B", 0, 8, 8}).body()
	reqs := []*inference.Request{{ID: "r", OutputFiles: true}}
	rf := newReplyFiles([]int{fd})
	results, large, err := decodeExecuteReplyArena(body, 0, []int{fd}, lease{}, rf, 4, reqs)
	rf.finish(err != nil)
	if err != nil {
		t.Fatal(err)
	}
	if large != 0 {
		t.Errorf("large = %d: outputs in the stub's files need no output arena", large)
	}
	resp := results[0].Response
	a, b := resp.Outputs[0], resp.Outputs[1]
	if string(a.Data) != "0123" || string(b.Data) != "89abcdef" {
		t.Fatalf("outputs %q %q", a.Data, b.Data)
	}
	for _, o := range []tensor.Tensor{a, b} {
		if o.Shared == nil || o.Shared.FD != fd || o.Shared.ID&callFileID == 0 || o.Shared.Hold == nil {
			t.Fatalf("output %s: Shared %+v, want a view of descriptor %d", o.Name, o.Shared, fd)
		}
		if unsafe.SliceData(o.Data) != unsafe.SliceData(o.Shared.Mem) {
			t.Errorf("output %s: Data is not the file's mapping", o.Name)
		}
	}
	if b.Shared.Offset != 8 {
		t.Errorf("B at offset %d, want 8", b.Shared.Offset)
	}
	if resp.Release == nil {
		t.Fatal("the response has no Release")
	}
	// A Hold (a BLS_RESPONSE being written) keeps the file past Release.
	done := a.Shared.Hold()
	resp.Release()
	resp.Release() // idempotent
	if !isOpen(fd) {
		t.Fatal("closed while held")
	}
	done()
	if isOpen(fd) {
		t.Fatal("the file is open after its response was released")
	}
}

func TestReplyFilesRefuseAnUnsealedFile(t *testing.T) {
	fd := memFile(t, []byte("0123456789"), unix.F_SEAL_SHRINK)
	body := newReply(1).fileOutputs(fileOut{"A", 0, 0, 4}).body()
	rf := newReplyFiles([]int{fd})
	_, _, err := decodeExecuteReplyArena(body, 0, []int{fd}, lease{}, rf, 4, []*inference.Request{{OutputFiles: true}})
	rf.finish(err != nil)
	if err == nil || !strings.Contains(err.Error(), "not a memory file sealed against writing and shrinking") {
		t.Fatalf("unsealed file: %v", err)
	}
	if isOpen(fd) {
		t.Error("the refused file is still open")
	}
}

func TestReplyFilesAreOneResponsesEach(t *testing.T) {
	fd := memFile(t, []byte("0123456789"), requiredSeals)
	body := newReply(2).fileOutputs(fileOut{"A", 0, 0, 4}).fileOutputs(fileOut{"A", 0, 4, 4}).body()
	rf := newReplyFiles([]int{fd})
	_, _, err := decodeExecuteReplyArena(body, 0, []int{fd}, lease{}, rf, 4, []*inference.Request{{}, {}})
	rf.finish(err != nil)
	if err == nil || !strings.Contains(err.Error(), "each response has a file of its own") {
		t.Fatalf("shared file: %v", err)
	}
	if isOpen(fd) {
		t.Error("the file is still open after the reply was refused")
	}
}

func TestReplyFilesCloseWhatNoResponseTook(t *testing.T) {
	used := memFile(t, []byte("0123456789"), requiredSeals)
	unused := memFile(t, []byte("x"), 0)
	body := newReply(2).fileOutputs(fileOut{"A", 0, 0, 4}).fail("no", "INTERNAL").body()
	rf := newReplyFiles([]int{used, unused})
	results, _, err := decodeExecuteReplyArena(body, 0, []int{used, unused}, lease{}, rf, 4, []*inference.Request{{}, {}})
	rf.finish(err != nil)
	if err != nil {
		t.Fatal(err)
	}
	if isOpen(unused) {
		t.Error("a descriptor no response used is open")
	}
	if !isOpen(used) {
		t.Fatal("the response's file was closed before its Release")
	}
	results[0].Response.Done()
	if isOpen(used) {
		t.Error("the file is open after Release")
	}
}

// An output that is a view of an input in a sealed stub file (the BLS
// caller's, passed as a region) is a view of that file, not a copy.
func TestReplyViewOfASealedInputFile(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 64)
	copy(data[16:], "payload!")
	fd := memFile(t, data, requiredSeals)
	f := newCallFiles([]int{fd}, nil)
	defer f.release()
	in, err := f.view(0, 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	req := &inference.Request{OutputFiles: true, Inputs: []tensor.Tensor{{Name: "IN", Datatype: tensor.Uint8, Shape: []int64{8}, Data: in.Mem, Shared: in}}}
	rt := collectRegions([]*inference.Request{req})
	defer rt.release(true)
	body := newReply(1).fileOutputs(fileOut{"OUT", requestFDBase, 16, 8}).body()
	results, _, err := decodeExecuteReplyArena(body, 0, nil, lease{regions: rt}, newReplyFiles(nil), 4, []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	out := results[0].Response.Outputs[0]
	if string(out.Data) != "payload!" || out.Shared == nil || out.Shared.FD != fd || out.Shared.Offset != 16 {
		t.Fatalf("output %q Shared %+v, want a view of the input file at 16", out.Data, out.Shared)
	}
	if unsafe.SliceData(out.Data) != unsafe.SliceData(in.Mem) {
		t.Error("the output is a copy of the input")
	}
	// Without output files (a consumer that is not a stub), a copy.
	results, _, err = decodeExecuteReplyArena(body, 0, nil, lease{regions: rt}, nil, 4, []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	if out := results[0].Response.Outputs[0]; string(out.Data) != "payload!" || out.Shared != nil {
		t.Fatalf("output %q Shared %+v, want a copy", out.Data, out.Shared)
	}
}

func TestCallResponseSendsSharedOutputsOutOfBand(t *testing.T) {
	shared := &tensor.Shared{FD: 42, Offset: 128, Mem: []byte("abcd")}
	resp := &inference.Response{Outputs: []tensor.Tensor{
		{Name: "S", Datatype: tensor.Uint8, Shape: []int64{4}, Data: shared.Mem, Shared: shared},
		{Name: "T", Datatype: tensor.Uint8, Shape: []int64{2}, Data: []byte("zz")},
		{Name: "U", Datatype: tensor.Uint8, Shape: []int64{4}, Data: shared.Mem, Shared: shared},
	}}
	bufs, n, fds := encodeCallResponse(resp, nil, true, sharedOutputs(resp))
	if len(fds) != 1 || fds[0] != 42 {
		t.Fatalf("fds = %v, want [42] once", fds)
	}
	body := bytes.Join(bufs, nil)[headerSize:]
	if len(body) != n {
		t.Fatalf("body of %d bytes, header says %d", len(body), n)
	}
	// The reply body after the BLS_RESPONSE flags: S and U out of band at
	// descriptor 0, offset 128; only T's bytes in the data section.
	c := cursor{b: body[8 : 8+binary.LittleEndian.Uint32(body[4:])]}
	if c.u32() != 1 || c.u8() != statusOutputs {
		t.Fatal("not one response with outputs")
	}
	c.u32()
	if c.u32() != 3 {
		t.Fatal("not three outputs")
	}
	for _, want := range []struct {
		name string
		oob  bool
	}{{"S", true}, {"T", false}, {"U", true}} {
		var tt tensor.Tensor
		oob, _ := c.tensorRecord("output", &tt)
		if tt.Name != want.name || oob != want.oob {
			t.Fatalf("record %s oob %v, want %s %v", tt.Name, oob, want.name, want.oob)
		}
		if oob {
			if idx, off := c.u32(), c.u64(); idx != 0 || off != 128 {
				t.Fatalf("%s at descriptor %d offset %d, want 0 128", tt.Name, idx, off)
			}
		}
	}
	if data := body[8+binary.LittleEndian.Uint32(body[4:]):]; string(bytes.TrimLeft(data, "\x00")) != "zz" || (len(body)-2)%dataAlign != 0 {
		t.Fatalf("data section %q, want only T's, aligned", data)
	}
	// Without descriptors (the caller's connection cannot pass them) every
	// output is in the frame.
	bufs, _, fds = encodeCallResponse(resp, nil, true, nil)
	if len(fds) != 0 {
		t.Fatalf("in band: fds %v", fds)
	}
	body = bytes.Join(bufs, nil)[headerSize:]
	results, err := decodeExecuteReply(body[4:], 4, []*inference.Request{{}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range results[0].Response.Outputs {
		got = append(got, string(o.Data))
		if addr := uintptr(unsafe.Pointer(&o.Data[0])) - uintptr(unsafe.Pointer(&body[0])); addr%dataAlign != 0 {
			t.Errorf("output %s at body offset %d, not aligned", o.Name, addr)
		}
	}
	if strings.Join(got, ",") != "abcd,zz,abcd" {
		t.Fatalf("in band: outputs %q", got)
	}
}
