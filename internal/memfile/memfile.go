// Package memfile keeps memory files (memfd) that hold large request
// bodies (binary HTTP bodies and gRPC ModelInferRequests, read into them
// instead of Go memory), so that a body's tensors reach a model stub as a
// descriptor of
// the very pages the body was read into: the server copies none of their
// bytes and zeroes no buffer for them.
//
// A file is reused from request to request (its pages are allocated once),
// which is safe only while nobody may still read the bytes of the request
// before: a File is handed back to its Pool when the request that owns it
// was answered and every Hold a batch took on it was released, unless a
// stub reported that it kept an array over the bytes past its reply
// (tensor.Shared.Kept) — such a file is closed instead, and lives on in the
// stub's mapping for as long as the model keeps the array. A request that
// ended with an error (cancelled, timed out, its instance gone) may still
// sit in a queue: its file goes back only once no tensor that views it is
// reachable any more, so that no batch can take a Hold on a file another
// request is writing. Such files wait for the garbage collector, whose
// pacing does not see them: past the idle bound of them, a collection is
// run (Reclaimer), and while more wait the pool takes no new body
// (Accepting), so bodies go to Go memory.
package memfile

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
	"weak"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/tensor"
)

// IDBit marks the registration ids of pooled files (tensor.Shared.ID),
// apart from the shared memory registry's (which count from 1) and BLS
// call files' (bit 63). The rest is the file's inode number, unique among
// live memory files.
const IDBit = 1 << 62

// minFile is the smallest file made; sizes go up in powers of two, so
// that files are reused across bodies of similar sizes.
const minFile = 1 << 20

// DefaultMaxIdle bounds the bytes of files kept idle for reuse.
const DefaultMaxIdle = 128 << 20

// Pool keeps idle files for reuse. Its methods are safe for concurrent use.
type Pool struct {
	maxIdle int64

	mu        sync.Mutex
	idle      []*File
	idleBytes int64
	open      int // files made and not yet closed, in use or idle
	closed    bool
	// reclaim counts the bytes of files waiting for their views to go
	// (ReleaseWhenUnused), and collects when too many wait.
	reclaim *Reclaimer
}

// Accepting reports whether the pool takes new bodies: not while more
// than its idle bound of files wait for the garbage collector.
func (p *Pool) Accepting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && p.reclaim.Waiting() <= p.maxIdle
}

// NewPool returns a pool that keeps at most maxIdle bytes of idle files
// (≤ 0: DefaultMaxIdle).
func NewPool(maxIdle int64) *Pool {
	if maxIdle <= 0 {
		maxIdle = DefaultMaxIdle
	}
	return &Pool{maxIdle: maxIdle, reclaim: NewReclaimer(maxIdle)}
}

// File is one memory file: read-write in the server, passed to stubs as a
// read-only descriptor. The request that got it from Get owns it and ends
// that ownership with Release or ReleaseWhenUnused.
type File struct {
	pool *Pool
	fd   int // read-write, the server's
	ro   int // read-only, the one stubs get
	mem  []byte
	id   uint64

	mu sync.Mutex
	// refs counts the owner's reference and every unreleased Hold.
	refs int
	// kept says a stub may still read the bytes: the file is never reused.
	kept bool
	// anchor is what every Shared view holds on to: reachable exactly while
	// a view is. Weak, so that the file never keeps it alive.
	anchor weak.Pointer[anchor]
}

// anchor is referenced by the Shared views of a file and nothing else.
type anchor struct{ f *File }

func (a *anchor) hold() func() { return a.f.hold() }
func (a *anchor) keep()        { a.f.keep() }

// Get returns a file of at least size bytes, owned by the caller: an idle
// one if one is big enough, else a new one.
func (p *Pool) Get(size int) (*File, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("the memory file pool is closed")
	}
	best := -1
	for i, f := range p.idle {
		if len(f.mem) >= size && (best < 0 || len(f.mem) < len(p.idle[best].mem)) {
			best = i
		}
	}
	if best >= 0 {
		f := p.idle[best]
		p.idle = append(p.idle[:best], p.idle[best+1:]...)
		p.idleBytes -= int64(len(f.mem))
		p.mu.Unlock()
		f.mu.Lock()
		f.refs = 1
		f.mu.Unlock()
		return f, nil
	}
	p.mu.Unlock()
	f, err := newFile(size)
	if err != nil {
		return nil, err
	}
	f.pool = p
	p.mu.Lock()
	p.open++
	p.mu.Unlock()
	return f, nil
}

func newFile(size int) (*File, error) {
	n := minFile
	for n < size {
		n *= 2
	}
	fd, mem, err := Create("vigil-body", n)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (*File, error) {
		_ = unix.Munmap(mem)
		unix.Close(fd)
		return nil, fmt.Errorf("%s a %d-byte memory file: %w", what, n, err)
	}
	ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("opening read-only", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(ro)
		return fail("stat of", err)
	}
	return &File{fd: fd, ro: ro, mem: mem, id: IDBit | st.Ino, refs: 1}, nil
}

// Create makes a memory file (memfd) of size bytes named name, sealed at
// its size — another process given it can neither shrink it under this
// one's mapping, which would turn a read into SIGBUS, nor grow it — and
// maps it read-write.
func Create(name string, size int) (fd int, mem []byte, err error) {
	fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, nil, fmt.Errorf("memfd_create: %w", err)
	}
	fail := func(what string, err error) (int, []byte, error) {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("%s a %d-byte memory file: %w", what, size, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fail("sizing", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("sealing", err)
	}
	mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mapping", err)
	}
	return fd, mem, nil
}

// Bytes is the whole file, writable (its owner fills it).
func (f *File) Bytes() []byte { return f.mem }

// Share is a Shared view of n bytes at off, for a tensor whose Data they
// are: a stub is passed the read-only descriptor.
func (f *File) Share(off, n int) *tensor.Shared {
	f.mu.Lock()
	a := f.anchor.Value()
	if a == nil {
		a = &anchor{f: f}
		f.anchor = weak.Make(a)
	}
	f.mu.Unlock()
	return &tensor.Shared{FD: f.ro, Offset: uint64(off), ID: f.id, Mem: f.mem[off : off+n : off+n], Hold: a.hold, Kept: a.keep}
}

// Contains reports whether b lies within the file's mapping.
func (f *File) Contains(b []byte) bool {
	if len(b) == 0 || len(f.mem) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(f.mem)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= lo && p-lo+uintptr(len(b)) <= uintptr(len(f.mem))
}

// ShareInputs marks the numeric tensors of at least threshold bytes whose
// Data lies in the file as Shared views of it, so that they reach a stub as
// the file's descriptor. A nil file shares nothing.
func (f *File) ShareInputs(ts []tensor.Tensor, threshold int) {
	if f == nil {
		return
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(f.mem)))
	for i := range ts {
		t := &ts[i]
		if t.Shared != nil || t.Datatype == tensor.Bytes || len(t.Data) < threshold || !f.Contains(t.Data) {
			continue
		}
		off := uintptr(unsafe.Pointer(unsafe.SliceData(t.Data))) - lo
		t.Shared = f.Share(int(off), len(t.Data))
	}
}

// Hold keeps the file from being reused or closed until release is called
// (once): for bytes of it handed to a writer that outlives its request.
func (f *File) Hold() (release func()) { return f.hold() }

// Ref takes another owner's reference to the file, ended like the first by
// Release, and returns f: for each of several messages that may carry
// views of it (the responses of one streamed request). A nil file gives
// nil.
func (f *File) Ref() *File {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
	return f
}

func (f *File) hold() func() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(f.unref) }
}

func (f *File) keep() {
	f.mu.Lock()
	f.kept = true
	f.mu.Unlock()
}

// Release ends the owner's reference once its request was answered:
// nothing will take a Hold on the file any more.
func (f *File) Release() { f.unref() }

// End ends the owner's reference (nil-safe): Release if its request was
// answered, ReleaseWhenUnused if it failed, as it may still be queued.
func (f *File) End(answered bool) {
	switch {
	case f == nil:
	case answered:
		f.Release()
	default:
		f.ReleaseWhenUnused()
	}
}

// ReleaseWhenUnused ends the owner's reference once no view of the file is
// reachable (at once when none is): for a request that ended with an error
// and may still be queued.
func (f *File) ReleaseWhenUnused() {
	f.mu.Lock()
	a := f.anchor.Value()
	f.mu.Unlock()
	if a == nil {
		f.unref()
		return
	}
	n := int64(len(f.mem))
	runtime.AddCleanup(a, func(f *File) {
		f.pool.reclaim.Done(n)
		f.unref()
	}, f)
	f.pool.reclaim.Wait(n)
}

func (f *File) unref() {
	f.mu.Lock()
	f.refs--
	if f.refs > 0 {
		f.mu.Unlock()
		return
	}
	kept := f.kept
	f.kept = false
	f.anchor = weak.Pointer[anchor]{}
	f.mu.Unlock()
	f.pool.put(f, kept)
}

// put takes back a file nobody uses: idle for reuse, or closed when a stub
// kept an array over it, the pool is closed or has enough idle bytes.
func (p *Pool) put(f *File, kept bool) {
	p.mu.Lock()
	if !kept && !p.closed && p.idleBytes+int64(len(f.mem)) <= p.maxIdle {
		p.idle = append(p.idle, f)
		p.idleBytes += int64(len(f.mem))
		p.mu.Unlock()
		return
	}
	p.open--
	p.mu.Unlock()
	f.close()
}

func (f *File) close() {
	_ = unix.Munmap(f.mem)
	unix.Close(f.ro)
	unix.Close(f.fd)
	f.mem = nil
}

// Close closes the idle files; files in use are closed when they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.idleBytes, p.closed = nil, 0, true
	p.open -= len(idle)
	p.mu.Unlock()
	for _, f := range idle {
		f.close()
	}
}

// Stats are a pool's counts, for tests and metrics.
type Stats struct {
	Open, Idle              int
	IdleBytes, WaitingBytes int64
}

// Stats reports the files open (in use or idle) and idle.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Open: p.open, Idle: len(p.idle), IdleBytes: p.idleBytes, WaitingBytes: p.reclaim.Waiting()}
}
