package memfile

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/tensor"
)

func get(t *testing.T, p *Pool, size int) *File {
	t.Helper()
	f, err := p.Get(size)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestReleasedFileIsReused(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	f := get(t, p, 300<<10)
	if len(f.Bytes()) != minFile {
		t.Fatalf("a 300 KiB body got %d bytes, want %d", len(f.Bytes()), minFile)
	}
	copy(f.Bytes(), "hello")
	fd := f.fd
	f.Release()
	if s := p.Stats(); s.Open != 1 || s.Idle != 1 {
		t.Fatalf("after release: %+v", s)
	}
	g := get(t, p, 1<<20)
	if g.fd != fd {
		t.Fatalf("a released file of the right size was not reused")
	}
	// A bigger body gets a file of its own.
	h := get(t, p, 3<<20)
	if len(h.Bytes()) != 4<<20 || h.fd == fd {
		t.Fatalf("3 MiB body: %d bytes, fd %d (reused %d)", len(h.Bytes()), h.fd, fd)
	}
	g.Release()
	h.Release()
	if s := p.Stats(); s.Open != 2 || s.Idle != 2 {
		t.Fatalf("%+v", s)
	}
}

func TestStubGetsReadOnlySealedDescriptor(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	f := get(t, p, 1<<20)
	defer f.Release()
	s := f.Share(64, 1024)
	fl, err := unix.FcntlInt(uintptr(s.FD), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Fatalf("stub descriptor flags %#x, %v: want read-only", fl, err)
	}
	seals, err := unix.FcntlInt(uintptr(s.FD), unix.F_GET_SEALS, 0)
	if err != nil || seals&(unix.F_SEAL_SHRINK|unix.F_SEAL_GROW) != unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
		t.Fatalf("seals %#x, %v", seals, err)
	}
	if s.ID&IDBit == 0 || s.Offset != 64 || len(s.Mem) != 1024 || &s.Mem[0] != &f.Bytes()[64] {
		t.Fatalf("view %+v", s)
	}
}

func TestHeldFileWaitsForItsHolds(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	f := get(t, p, 1<<20)
	s := f.Share(0, 10)
	release := s.Hold()
	f.Release()
	if st := p.Stats(); st.Idle != 0 {
		t.Fatalf("a held file went idle: %+v", st)
	}
	release()
	release() // once only
	if st := p.Stats(); st.Idle != 1 || st.Open != 1 {
		t.Fatalf("%+v", st)
	}
}

// Each reference Ref takes is ended by a Release of its own.
func TestRefsAreReleasedOneByOne(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	f := get(t, p, 1<<20)
	if (*File)(nil).Ref() != nil {
		t.Fatal("a nil file's Ref is not nil")
	}
	if f.Ref() != f {
		t.Fatal("Ref does not return its file")
	}
	f.Release()
	if s := p.Stats(); s.Idle != 0 {
		t.Fatalf("the file went back with a reference left: %+v", s)
	}
	f.Release()
	if s := p.Stats(); s.Idle != 1 {
		t.Fatalf("after the last release: %+v", s)
	}
}

func TestKeptFileIsClosedNotReused(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	f := get(t, p, 1<<20)
	fd, ro := f.fd, f.ro
	s := f.Share(0, 10)
	release := s.Hold()
	s.Kept() // the stub kept an array over it
	release()
	f.Release()
	if st := p.Stats(); st.Open != 0 || st.Idle != 0 {
		t.Fatalf("a kept file stayed: %+v", st)
	}
	for _, d := range []int{fd, ro} {
		if _, err := unix.FcntlInt(uintptr(d), unix.F_GETFD, 0); err == nil {
			t.Errorf("descriptor %d of a kept file is still open", d)
		}
	}
}

func TestIdleBytesAreBounded(t *testing.T) {
	p := NewPool(minFile)
	defer p.Close()
	a, b := get(t, p, 1), get(t, p, 1)
	a.Release()
	b.Release()
	if st := p.Stats(); st.Open != 1 || st.Idle != 1 || st.IdleBytes != minFile {
		t.Fatalf("%+v", st)
	}
}

func TestUnansweredFileWaitsUntilNoViewIsReachable(t *testing.T) {
	p := NewPool(minFile)
	defer p.Close()
	f := get(t, p, 1)
	view := f.Share(0, 8)
	f.ReleaseWhenUnused()
	runtime.GC()
	if st := p.Stats(); st.Idle != 0 || st.WaitingBytes != minFile {
		t.Fatalf("went idle with a view reachable: %+v", st)
	}
	// A second one over the bound: the pool takes no new body.
	g := get(t, p, 1)
	view2 := g.Share(0, 8)
	g.ReleaseWhenUnused()
	if p.Accepting() {
		t.Fatal("accepting with more than the idle bound waiting")
	}
	runtime.KeepAlive(view)
	runtime.KeepAlive(view2)
	view, view2 = nil, nil
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().WaitingBytes != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("files still waiting after their views went: %+v", p.Stats())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if !p.Accepting() {
		t.Fatal("not accepting once nothing waits")
	}
	if st := p.Stats(); st.Idle != 1 || st.Open != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestNoViewReleasesAtOnce(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	f := get(t, p, 1)
	f.ReleaseWhenUnused()
	if st := p.Stats(); st.Idle != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestShareInputsMarksLargeNumericTensorsInTheFile(t *testing.T) {
	p := NewPool(0)
	defer p.Close()
	f := get(t, p, 1<<20)
	defer f.Release()
	b := f.Bytes()
	outside := make([]byte, 4096)
	ts := []tensor.Tensor{
		{Name: "big", Datatype: tensor.FP32, Data: b[128 : 128+4096]},
		{Name: "small", Datatype: tensor.FP32, Data: b[8192 : 8192+64]},
		{Name: "bytes", Datatype: tensor.Bytes, Data: b[16384 : 16384+4096]},
		{Name: "outside", Datatype: tensor.FP32, Data: outside},
	}
	f.ShareInputs(ts, 1024)
	if s := ts[0].Shared; s == nil || s.Offset != 128 || len(s.Mem) != 4096 || s.Kept == nil {
		t.Fatalf("big: %+v", s)
	}
	for _, i := range []int{1, 2, 3} {
		if ts[i].Shared != nil {
			t.Errorf("%s was shared", ts[i].Name)
		}
	}
	if !f.Contains(b[len(b)-1:]) || f.Contains(outside) || f.Contains(nil) {
		t.Error("Contains")
	}
}

// Past the idle bound of files waiting for the collector, the pool runs a
// collection itself: unreachable files come back without anyone else
// allocating.
func TestWaitingFilesAreReclaimed(t *testing.T) {
	p := NewPool(minFile)
	defer p.Close()
	for range 3 {
		f := get(t, p, 1)
		_ = f.Share(0, 8) // a view nobody keeps
		f.ReleaseWhenUnused()
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().WaitingBytes > minFile {
		if time.Now().After(deadline) {
			t.Fatalf("waiting files were not reclaimed: %+v", p.Stats())
		}
		time.Sleep(time.Millisecond) // the cleanups run on a goroutine of the runtime's
	}
}

func TestReclaimerCollectsOnlyPastItsLimit(t *testing.T) {
	r := NewReclaimer(100)
	r.Wait(60)
	if r.last.Load() != 0 {
		t.Fatal("collected below the limit")
	}
	r.Wait(60)
	first := r.last.Load()
	if first == 0 {
		t.Fatal("did not collect past the limit")
	}
	r.Wait(1) // within reclaimInterval of the last: no second collection
	if r.last.Load() != first {
		t.Fatal("collected twice within the interval")
	}
	r.Done(121)
	if r.Waiting() != 0 {
		t.Fatalf("waiting %d", r.Waiting())
	}
}
