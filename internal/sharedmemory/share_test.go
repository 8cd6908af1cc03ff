package sharedmemory

import (
	"bytes"
	"context"
	"os"
	"testing"
	"unsafe"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// A large input is not copied: its Data is the region's mapping and its
// Shared names the region for a stub; a Hold keeps the region mapped past
// an unregister and past the request's own end, until released.
func TestLargeInputsAreSharedAndHeld(t *testing.T) {
	r, dir := newEnabled(t)
	const n = ShareThreshold
	in := object(t, dir, "in", n+64)
	if err := r.Register("in", "/in", 0, n+64); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{1, 2, 3, 4}, n/4)
	if err := os.WriteFile(in, append(make([]byte, 64), want...), 0o600); err != nil {
		t.Fatal(err)
	}
	req := &inference.Request{Model: "m", Inputs: []tensor.Tensor{
		{Name: "A", Datatype: tensor.FP32, Shape: []int64{n / 4}, Parameters: map[string]any{ParamRegion: "in", ParamByteSize: int64(n), ParamOffset: int64(64)}},
	}}
	var release func()
	var passed *tensor.Tensor
	_, err := r.Infer(context.Background(), req, func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		passed = &req.Inputs[0]
		s := passed.Shared
		if s == nil {
			t.Fatal("a large input has no Shared")
		}
		if s.Offset != 64 || unsafe.SliceData(s.Mem) != unsafe.SliceData(passed.Data) || !bytes.Equal(passed.Data, want) {
			t.Errorf("Shared = offset %d, Data aliases Mem %v, bytes right %v", s.Offset,
				unsafe.SliceData(s.Mem) == unsafe.SliceData(passed.Data), bytes.Equal(passed.Data, want))
		}
		// The descriptor is the object's, read-only.
		var st [2]os.FileInfo
		st[0], _ = os.Stat(in)
		f := os.NewFile(uintptr(s.FD), "shared")
		st[1], _ = f.Stat()
		if st[1] == nil || !os.SameFile(st[0], st[1]) {
			t.Errorf("Shared.FD is not the region's object")
		}
		if _, err := f.WriteAt([]byte{9}, 0); err == nil {
			t.Errorf("Shared.FD of an input is writable")
		}
		release = s.Hold()
		if err := r.Unregister("in"); err != nil {
			t.Fatal(err)
		}
		return &inference.Response{Model: "m"}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Mapped() != 1 {
		t.Fatalf("Mapped = %d after the request ended with a Hold out, want 1", r.Mapped())
	}
	release()
	release() // idempotent
	if r.Mapped() != 0 {
		t.Fatalf("Mapped = %d after the Hold's release, want 0", r.Mapped())
	}
	if passed.Shared.Hold == nil {
		t.Fatal("no Hold")
	}
	passed.Shared.Hold()() // after the end: harmless
}

// A large output room is lent as Dest; an output whose Data is the room's
// start (the stub wrote it there) is not written again, and an output that
// aliases a shared input (a model passing an input through) is copied
// before the request ends.
func TestDestAndPassThrough(t *testing.T) {
	r, dir := newEnabled(t)
	const n = ShareThreshold
	object(t, dir, "in", n)
	out := object(t, dir, "out", 2*n)
	if err := r.Register("in", "/in", 0, n); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("out", "/out", 0, 2*n); err != nil {
		t.Fatal(err)
	}
	req := &inference.Request{Model: "m",
		Inputs: []tensor.Tensor{{Name: "A", Datatype: tensor.Uint8, Shape: []int64{n}, Parameters: map[string]any{ParamRegion: "in", ParamByteSize: int64(n)}}},
		Outputs: []inference.RequestedOutput{
			{Name: "W", Parameters: map[string]any{ParamRegion: "out", ParamByteSize: int64(n), ParamOffset: int64(n)}},
			{Name: "P"},
		},
	}
	var inData []byte
	resp, err := r.Infer(context.Background(), req, func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		inData = req.Inputs[0].Data
		d := req.Outputs[0].Dest
		if d == nil || d.Offset != n || len(d.Mem) != n {
			t.Fatalf("Dest = %+v", d)
		}
		for i := range d.Mem {
			d.Mem[i] = 7 // as a stub writes through its own mapping
		}
		return &inference.Response{Model: "m", Outputs: []tensor.Tensor{
			{Name: "W", Datatype: tensor.Uint8, Shape: []int64{n / 2}, Data: d.Mem[:n/2]},
			{Name: "P", Datatype: tensor.Uint8, Shape: []int64{n}, Data: req.Inputs[0].Data},
		}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := resp.Outputs[0]; w.Data != nil || w.Parameters[ParamByteSize] != int64(n/2) {
		t.Errorf("W = %+v", w.Parameters)
	}
	got, _ := os.ReadFile(out)
	if got[n] != 7 || got[n+n/2-1] != 7 || got[n+n/2] != 7 {
		t.Errorf("the room does not hold what the stub wrote")
	}
	p := resp.Outputs[1]
	if len(p.Data) != n || inData == nil || unsafe.SliceData(p.Data) == unsafe.SliceData(inData) {
		t.Errorf("a pass-through output still aliases the region")
	}
}
