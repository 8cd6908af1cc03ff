package sharedmemory

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// object creates a shared memory object of size bytes in dir, as a client's
// shm_open + ftruncate would, and returns its file path.
func object(t *testing.T, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newEnabled(t *testing.T) (*Registry, string) {
	t.Helper()
	dir := t.TempDir()
	r := New(Config{Enabled: true, Dir: dir})
	t.Cleanup(func() {
		r.Close()
		if n := r.Mapped(); n != 0 {
			t.Errorf("%d regions still mapped after Close", n)
		}
	})
	return r, dir
}

func wantErr(t *testing.T, err error, code apierr.Code, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %q", code, text)
	}
	if got := apierr.CodeOf(err); got != code {
		t.Errorf("code = %v, want %v (%v)", got, code, err)
	}
	if !strings.Contains(err.Error(), text) {
		t.Errorf("error %q does not contain %q", err, text)
	}
}

func TestDisabledRefusesRegisterAndUnregister(t *testing.T) {
	r := New(Config{Dir: t.TempDir()})
	wantErr(t, r.Register("r", "/k", 0, 8), apierr.Unsupported, DisabledMessage)
	wantErr(t, r.Unregister("r"), apierr.Unsupported, DisabledMessage)
	wantErr(t, r.Unregister(""), apierr.Unsupported, DisabledMessage)
	st, err := r.Status("")
	if err != nil || len(st) != 0 {
		t.Errorf("Status = %v, %v; want an empty list", st, err)
	}
}

func TestRegisterStatusUnregister(t *testing.T) {
	r, dir := newEnabled(t)
	object(t, dir, "in", 64)
	object(t, dir, "out", 64)
	if err := r.Register("input", "/in", 0, 64); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("output", "out", 16, 32); err != nil {
		t.Fatal(err)
	}
	st, err := r.Status("")
	want := []Status{{"input", "/in", 0, 64}, {"output", "out", 16, 32}}
	if err != nil || len(st) != 2 || st[0] != want[0] || st[1] != want[1] {
		t.Fatalf("Status = %+v, %v; want %+v", st, err, want)
	}
	if st, err := r.Status("output"); err != nil || len(st) != 1 || st[0] != want[1] {
		t.Errorf("Status(output) = %+v, %v", st, err)
	}
	_, err = r.Status("nope")
	wantErr(t, err, apierr.NotFound, "Unable to find system shared memory region: 'nope'")

	wantErr(t, r.Register("input", "/in", 0, 8), apierr.AlreadyExists, "shared memory region 'input' already in manager")
	if err := r.Unregister("input"); err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister("never-registered"); err != nil {
		t.Errorf("unregistering an unknown name = %v, want success as in Triton", err)
	}
	if r.Mapped() != 1 {
		t.Errorf("Mapped = %d after one unregister, want 1", r.Mapped())
	}
	if err := r.Unregister(""); err != nil {
		t.Fatal(err)
	}
	if r.Mapped() != 0 {
		t.Errorf("Mapped = %d after unregister all, want 0", r.Mapped())
	}
}

func TestRegisterChecks(t *testing.T) {
	r, dir := newEnabled(t)
	object(t, dir, "small", 10)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("do not map me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, key    string
		offset, size uint64
		code         apierr.Code
		text         string
	}{
		{"", "/small", 0, 1, apierr.InvalidArgument, "'region name' is necessary to register system shared memory region"},
		{"a", "///", 0, 1, apierr.InvalidArgument, "cannot register shared memory region 'a' - invalid shm key '///'"},
		{"a", "/triton_python_backend_shm_region_x", 0, 1, apierr.InvalidArgument, "as the key contains the reserved prefix 'triton_python_backend_shm_region_'"},
		{"a", "/vigil_arena", 0, 1, apierr.InvalidArgument, "reserved prefix 'vigil_'"},
		{"a", "/x/../../etc/passwd", 0, 1, apierr.InvalidArgument, "invalid shm key"},
		{"a", "/missing", 0, 1, apierr.Internal, "Unable to open shared memory region: '/missing'"},
		{"a", "/link", 0, 1, apierr.Internal, "Unable to open shared memory region: '/link'"},
		{"a", "/adir", 0, 1, apierr.Internal, "Unable to open shared memory region: '/adir'"},
		{"a", "/small", 4, 7, apierr.InvalidArgument, "failed to register shared memory region 'a': invalid args"},
		{"a", "/small", 11, 0, apierr.InvalidArgument, "failed to register shared memory region 'a': invalid args"},
		{"a", "/small", math.MaxUint64, 2, apierr.InvalidArgument, "failed to register shared memory region 'a': invalid args"},
	}
	for _, tc := range cases {
		err := r.Register(tc.name, tc.key, tc.offset, tc.size)
		wantErr(t, err, tc.code, tc.text)
	}
	if r.Mapped() != 0 {
		t.Errorf("Mapped = %d after failed registrations", r.Mapped())
	}
}

// TestUnalignedOffset shows that a region need not start on a page
// boundary (Triton's mmap refuses that): the bytes are the object's.
func TestUnalignedOffset(t *testing.T) {
	r, dir := newEnabled(t)
	p := object(t, dir, "o", 3*os.Getpagesize())
	content := make([]byte, 3*os.Getpagesize())
	for i := range content {
		content[i] = byte(i * 7)
	}
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	off := uint64(os.Getpagesize() + 13)
	if err := r.Register("r", "/o", off, 100); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire("r", 5, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	got, err := l.Read()
	if err != nil || !bytes.Equal(got, content[off+5:off+15]) {
		t.Errorf("Read = %v, %v; want %v", got, err, content[off+5:off+15])
	}
	if l.ObjectOffset() != off+5 || l.Key() != "/o" {
		t.Errorf("ObjectOffset, Key = %d, %q", l.ObjectOffset(), l.Key())
	}
	if err := l.Write([]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(p)
	if !bytes.Equal(onDisk[off+5:off+8], []byte{1, 2, 3}) {
		t.Errorf("the write did not reach the object: %v", onDisk[off+5:off+8])
	}
}

func TestAcquireBounds(t *testing.T) {
	r, dir := newEnabled(t)
	object(t, dir, "o", 64)
	if err := r.Register("r", "/o", 0, 32); err != nil {
		t.Fatal(err)
	}
	_, err := r.Acquire("nope", 0, 1)
	wantErr(t, err, apierr.NotFound, "Unable to find shared memory region: 'nope'")
	_, err = r.Acquire("r", 32, 1)
	wantErr(t, err, apierr.InvalidArgument, "Invalid offset for shared memory region: 'r'")
	_, err = r.Acquire("r", 8, 25)
	wantErr(t, err, apierr.InvalidArgument, "Invalid offset + byte size for shared memory region: 'r'")
	_, err = r.Acquire("r", 8, math.MaxUint64)
	wantErr(t, err, apierr.InvalidArgument, "Invalid offset + byte size for shared memory region: 'r'")
}

// TestUnregisterWaitsForLeases: a region unregistered while a request holds
// it leaves the registry at once and is unmapped when the request ends.
func TestUnregisterWaitsForLeases(t *testing.T) {
	r, dir := newEnabled(t)
	object(t, dir, "o", 64)
	if err := r.Register("r", "/o", 0, 64); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire("r", 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister("r"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Status("r"); apierr.CodeOf(err) != apierr.NotFound {
		t.Errorf("Status after unregister = %v, want NotFound", err)
	}
	if r.Mapped() != 1 {
		t.Fatalf("Mapped = %d while leased, want 1", r.Mapped())
	}
	if _, err := l.Read(); err != nil {
		t.Errorf("the leased bytes are gone before Release: %v", err)
	}
	// The name is free again at once.
	if err := r.Register("r", "/o", 0, 8); err != nil {
		t.Errorf("re-register under the same name = %v", err)
	}
	l.Release()
	l.Release()
	if r.Mapped() != 1 {
		t.Errorf("Mapped = %d after Release, want 1 (the new registration)", r.Mapped())
	}
}

// TestTruncatedObjectIsAnError: a client that shrinks the object under a
// registered mapping gets an error; the server does not die of SIGBUS.
func TestTruncatedObjectIsAnError(t *testing.T) {
	r, dir := newEnabled(t)
	p := object(t, dir, "o", 4*os.Getpagesize())
	if err := r.Register("r", "/o", 0, uint64(4*os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire("r", uint64(2*os.Getpagesize()), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	_, err = l.Read()
	wantErr(t, err, apierr.InvalidArgument, "faulted on access")
	wantErr(t, l.Write([]byte{1}), apierr.InvalidArgument, "faulted on access")
}

func fp32(vals ...float32) []byte {
	b := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// echo is a model: every input comes back as OUT<name>.
func echo(_ context.Context, req *inference.Request) (*inference.Response, error) {
	resp := &inference.Response{Model: req.Model}
	for _, in := range req.Inputs {
		if len(in.Parameters) > 0 {
			return nil, errors.New("the model saw shared memory parameters")
		}
		resp.Outputs = append(resp.Outputs, tensor.Tensor{Name: "OUT" + in.Name, Datatype: in.Datatype, Shape: in.Shape, Data: in.Data})
	}
	return resp, nil
}

func TestInferInputsAndOutputsInRegions(t *testing.T) {
	r, dir := newEnabled(t)
	in := object(t, dir, "in", 32)
	out := object(t, dir, "out", 32)
	if err := os.WriteFile(in, append(append(make([]byte, 8), fp32(1, 2, 3, 4)...), make([]byte, 8)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("in", "/in", 0, 32); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("out", "/out", 0, 32); err != nil {
		t.Fatal(err)
	}
	req := &inference.Request{
		Model: "m",
		Inputs: []tensor.Tensor{
			{Name: "A", Datatype: tensor.FP32, Shape: []int64{4}, Parameters: map[string]any{ParamRegion: "in", ParamByteSize: int64(16), ParamOffset: int64(8)}},
			{Name: "B", Datatype: tensor.FP32, Shape: []int64{1}, Data: fp32(9)},
		},
		Outputs: []inference.RequestedOutput{
			{Name: "OUTA", Parameters: map[string]any{ParamRegion: "out", ParamByteSize: uint64(20), ParamOffset: int64(4)}},
			{Name: "OUTB"},
		},
	}
	resp, err := r.Infer(context.Background(), req, echo)
	if err != nil {
		t.Fatal(err)
	}
	a, b := resp.Outputs[0], resp.Outputs[1]
	if a.Data != nil || !InSharedMemory(a.Parameters) || a.Parameters[ParamByteSize] != int64(16) {
		t.Errorf("OUTA = %+v, want no data, its region and the 16 bytes written", a)
	}
	if !bytes.Equal(b.Data, fp32(9)) || InSharedMemory(b.Parameters) {
		t.Errorf("OUTB = %+v, want its data in the response", b)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got[4:20], fp32(1, 2, 3, 4)) {
		t.Errorf("output region holds %v", got[4:20])
	}
	if req.Inputs[0].Data != nil {
		t.Errorf("the caller's request was modified")
	}
	if r.Mapped() != 2 {
		t.Errorf("Mapped = %d", r.Mapped())
	}
}

func TestInferErrors(t *testing.T) {
	r, dir := newEnabled(t)
	object(t, dir, "o", 64)
	if err := r.Register("o", "/o", 0, 64); err != nil {
		t.Fatal(err)
	}
	input := func(p map[string]any) *inference.Request {
		return &inference.Request{Model: "m", Inputs: []tensor.Tensor{{Name: "A", Datatype: tensor.FP32, Shape: []int64{4}, Parameters: p}}}
	}
	cases := []struct {
		name string
		req  *inference.Request
		code apierr.Code
		text string
	}{
		{"unknown region", input(map[string]any{ParamRegion: "x", ParamByteSize: int64(16)}), apierr.NotFound, "Unable to find shared memory region: 'x'"},
		{"no byte size", input(map[string]any{ParamRegion: "o"}), apierr.InvalidArgument, "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor 'A'"},
		{"offset alone", input(map[string]any{ParamOffset: int64(1)}), apierr.InvalidArgument, "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for tensor 'A'"},
		{"region not a string", input(map[string]any{ParamRegion: int64(1), ParamByteSize: int64(16)}), apierr.InvalidArgument, "invalid value type for 'shared_memory_region' parameter for tensor 'A', expected string_param."},
		{"size not an integer", input(map[string]any{ParamRegion: "o", ParamByteSize: "16"}), apierr.InvalidArgument, "invalid value type for 'shared_memory_byte_size' parameter for tensor 'A', expected int64_param."},
		{"negative offset", input(map[string]any{ParamRegion: "o", ParamByteSize: int64(16), ParamOffset: int64(-1)}), apierr.InvalidArgument, "must not be negative"},
		{"past the end", input(map[string]any{ParamRegion: "o", ParamByteSize: int64(16), ParamOffset: int64(60)}), apierr.InvalidArgument, "Invalid offset + byte size for shared memory region: 'o'"},
		{"size does not match shape", input(map[string]any{ParamRegion: "o", ParamByteSize: int64(12)}), apierr.InvalidArgument, "input 'A' in shared memory region 'o' does not match its shape"},
		{"output too small", &inference.Request{Model: "m",
			Inputs:  []tensor.Tensor{{Name: "A", Datatype: tensor.FP32, Shape: []int64{4}, Data: fp32(1, 2, 3, 4)}},
			Outputs: []inference.RequestedOutput{{Name: "OUTA", Parameters: map[string]any{ParamRegion: "o", ParamByteSize: int64(8)}}}},
			apierr.Internal, "shared memory size specified with the request for output 'OUTA' (8 bytes) should be at least 16 bytes to hold the results"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Infer(context.Background(), tc.req, echo)
			wantErr(t, err, tc.code, tc.text)
		})
	}
	r.mu.Lock()
	leases := r.regions["o"].leases
	r.mu.Unlock()
	if leases != 0 {
		t.Errorf("%d leases left after failed requests", leases)
	}
}

// TestRealShm registers an object the way tritonclient creates one, with a
// shm_open name in /dev/shm, when the machine has it.
func TestRealShm(t *testing.T) {
	if _, err := os.Stat(DefaultDir); err != nil {
		t.Skip("no /dev/shm")
	}
	key := "vigil-test-" + strings.ReplaceAll(t.Name(), "/", "_")
	p := filepath.Join(DefaultDir, key)
	if err := os.WriteFile(p, fp32(5, 6), 0o600); err != nil {
		t.Skip("cannot create a shared memory object:", err)
	}
	defer os.Remove(p)
	r := New(Config{Enabled: true})
	defer r.Close()
	// tritonclient's helper opens "/" + key, so a key given as "/name"
	// reaches the server with a leading slash either way.
	if err := r.Register("r", "/"+key, 0, 8); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire("r", 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if got, err := l.Read(); err != nil || !bytes.Equal(got, fp32(5, 6)) {
		t.Errorf("Read = %v, %v", got, err)
	}
}
