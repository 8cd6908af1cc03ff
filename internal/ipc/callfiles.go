package ipc

import (
	"fmt"
	"runtime"
	"sync"
	"weak"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/tensor"
)

// A BLS call's large inputs arrive in memory files the caller stub made
// (one per call, sealed against writing and shrinking, passed with the
// BLS_INFER frame). The server maps each once, read-only, and hands the
// inputs on as tensor.Shared views of it, so that the callee's EXECUTE
// passes the same file to the callee's stub as a client region
// (regions.go): no byte of them is copied in Go. The files are closed and
// unmapped when the call has ended and every Hold a batch took on them is
// released (the callee's reply is in). A call that ended with an error
// (cancelled, timed out, its stub gone) may have ended while the callee's
// queue still held its request, or a worker was about to start it: the
// call's reference then goes only once no tensor that views the files is
// reachable any more (the request's, or a copy of one in a request made
// from it, such as an ensemble step's), so that no batch can take a Hold on
// a closed descriptor. The client's Reclaimer runs a collection when more
// than memfile.DefaultMaxIdle bytes of such files wait, so that a stream
// of failing calls does not pile them up between collections.

// callFileID marks the registration ids of call files, apart from the
// shared memory registry's (which count from 1). The rest is the file's
// inode number: unique among live memory files, and a stub that keeps a
// mapping under the id keeps the file alive, so no later file shares it.
const callFileID = 1 << 63

// requiredSeals are the seals a call file must have: the server maps it,
// and a file that shrank or changed under the mapping would fault it or
// change a request in flight.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_WRITE

// callFiles are the memory files one BLS_INFER passed. Its methods are
// safe for concurrent use; a nil *callFiles passes none.
type callFiles struct {
	mu   sync.Mutex
	fds  []int
	maps [][]byte // by descriptor index, nil until an input needs it
	ids  []uint64
	refs int // the call's own reference plus unreleased Holds
	// anchor is what every Shared view holds on to (its Hold): reachable
	// exactly while a view is. Weak, so that the files never keep it alive.
	anchor weak.Pointer[filesAnchor]
	// reclaim, if not nil, counts the files' bytes while they wait for the
	// garbage collector (releaseWhenUnused) and collects when too many
	// wait (memfile.Reclaimer).
	reclaim *memfile.Reclaimer
}

// filesAnchor is referenced by every Shared view of the files and by
// nothing else, so that its reachability says whether a view still is.
type filesAnchor struct{ f *callFiles }

func (a *filesAnchor) hold() func() { return a.f.hold() }

func newCallFiles(fds []int, reclaim *memfile.Reclaimer) *callFiles {
	if len(fds) == 0 {
		return nil
	}
	return &callFiles{fds: fds, maps: make([][]byte, len(fds)), ids: make([]uint64, len(fds)), refs: 1, reclaim: reclaim}
}

// view is size bytes at off of descriptor idx, as a Shared tensor's.
func (f *callFiles) view(idx uint32, off, size uint64) (*tensor.Shared, error) {
	if f == nil || int(idx) >= len(f.fds) {
		n := 0
		if f != nil {
			n = len(f.fds)
		}
		return nil, fmt.Errorf("data in descriptor %d, %d came with the frame", idx, n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maps[idx] == nil {
		fd := f.fds[idx]
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil || seals&requiredSeals != requiredSeals {
			return nil, fmt.Errorf("descriptor %d is not a memory file sealed against writing and shrinking", idx)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("fstat: %w", err)
		}
		if st.Size <= 0 {
			return nil, fmt.Errorf("descriptor %d is an empty file", idx)
		}
		mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("mapping descriptor %d: %w", idx, err)
		}
		f.maps[idx], f.ids[idx] = mem, callFileID|st.Ino
	}
	mem := f.maps[idx]
	if off > uint64(len(mem)) || size > uint64(len(mem))-off {
		return nil, fmt.Errorf("%d bytes at offset %d overrun the %d-byte file", size, off, len(mem))
	}
	data := mem[off : off+size : off+size]
	a := f.anchor.Value()
	if a == nil {
		a = &filesAnchor{f: f}
		f.anchor = weak.Make(a)
	}
	return &tensor.Shared{FD: f.fds[idx], Offset: off, ID: f.ids[idx], Mem: data, Hold: a.hold}, nil
}

// hold keeps the files open and mapped until the returned function is
// called.
func (f *callFiles) hold() func() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(f.release) }
}

// releaseWhenUnused drops the call's reference once no view of the files
// is reachable (at once when none is).
func (f *callFiles) releaseWhenUnused() {
	if f == nil {
		return
	}
	f.mu.Lock()
	a := f.anchor.Value()
	var n int64
	for _, m := range f.maps {
		n += int64(len(m))
	}
	f.mu.Unlock()
	if a == nil {
		f.release()
		return
	}
	runtime.AddCleanup(a, func(f *callFiles) {
		f.reclaim.Done(n)
		f.release()
	}, f)
	f.reclaim.Wait(n)
}

// release drops one reference (the call's, once it ended, or a Hold's);
// the last closes and unmaps the files. It is nil-safe.
func (f *callFiles) release() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.refs--
	if f.refs > 0 {
		f.mu.Unlock()
		return
	}
	maps, fds := f.maps, f.fds
	f.maps, f.fds = nil, nil
	f.mu.Unlock()
	for _, m := range maps {
		if m != nil {
			_ = unix.Munmap(m)
		}
	}
	closeFDs(fds)
}
