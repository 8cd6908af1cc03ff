package ipc

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/memfile"
)

// An arena is a memory file that both sides map and that is reused from
// batch to batch, so that its pages are allocated (on a VM: faulted in
// from the host) once rather than for every large tensor. Each client has
// two: the input arena, which the server fills with a batch's large inputs
// and the stub maps to hand numpy views of them, and the output arena,
// which the server lends to the stub with the batch for its large outputs
// and copies them out of after the reply.
//
// Ownership goes back and forth with the frames. An arena is lent to one
// batch at a time; a busy arena means the batch's large tensors go through
// the socket. The input arena comes back when the reply says the stub
// holds no view of it (flagInputsReleased: the model kept no input array
// past execute); otherwise the server lets it go (closes its descriptor and
// mapping) and makes a new one, so a retained view never sees its bytes
// overwritten. The output arena comes back once the reply's outputs are
// copied out; a batch whose caller gave up lets both go. A memory file
// lives while any descriptor or mapping of it exists in either process:
// arenas that are let go, and a dead stub's mappings, are freed by the
// kernel.
type arena struct {
	fd  int
	mem []byte // the server's shared mapping, len(mem) bytes
}

// minArena is the smallest arena made; arenas grow in powers of two.
const minArena = 1 << 20

func newArena(need int) (*arena, error) {
	size := minArena
	for size < need {
		size *= 2
	}
	// Sealed at its size: nobody (the stub, or a model in it) can shrink
	// it under the server's mapping, which would turn a copy into SIGBUS.
	fd, mem, err := memfile.Create("vigil-arena", size)
	if err != nil {
		return nil, fmt.Errorf("arena: %w", err)
	}
	return &arena{fd: fd, mem: mem}, nil
}

func (a *arena) close() {
	if a == nil {
		return
	}
	_ = unix.Munmap(a.mem)
	_ = unix.Close(a.fd)
}

// arenas is a client's pair of arenas.
type arenas struct {
	mu              sync.Mutex
	in, out         *arena
	inBusy, outBusy bool
	outWant         int // the most large-output bytes one reply has had
	closed          bool
}

// lease is what one batch borrowed; nil arenas were not available.
// regions is the client shared memory the batch passes (regions.go), which
// the arenas do not own.
type lease struct {
	in, out *arena
	regions *regionTable
}

// acquire lends the input arena, grown to inNeed bytes, when inNeed > 0,
// and the output arena when the batch may have large outputs. Either is
// nil when busy or not needed.
func (s *arenas) acquire(inNeed int) (lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l lease
	if s.closed {
		return l, nil
	}
	if inNeed > 0 && !s.inBusy {
		if s.in != nil && len(s.in.mem) < inNeed {
			s.in.close()
			s.in = nil
		}
		if s.in == nil {
			a, err := newArena(inNeed)
			if err != nil {
				return l, err
			}
			s.in = a
		}
		s.inBusy, l.in = true, s.in
	}
	outNeed := max(inNeed, s.outWant)
	if outNeed > 0 && !s.outBusy {
		if s.out != nil && len(s.out.mem) < outNeed {
			s.out.close()
			s.out = nil
		}
		if s.out == nil {
			a, err := newArena(outNeed)
			if err != nil {
				if l.in != nil {
					s.inBusy = false
				}
				return lease{}, err
			}
			s.out = a
		}
		s.outBusy, l.out = true, s.out
	}
	return l, nil
}

// release ends a lease. inputsFree says whether the stub let go of the
// input arena; outBytes is the size of the reply's large outputs that did
// not fit the output arena (the next one is made big enough).
func (s *arenas) release(l lease, inputsFree bool, outBytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outWant = max(s.outWant, outBytes)
	if l.in != nil {
		s.inBusy = false
		if !inputsFree || s.closed {
			l.in.close()
			if s.in == l.in {
				s.in = nil
			}
		}
	}
	if l.out != nil {
		s.outBusy = false
		if s.closed {
			l.out.close()
			if s.out == l.out {
				s.out = nil
			}
		}
	}
}

// abandon ends a lease whose batch's outcome is unknown (its caller gave
// up, or the connection failed): the stub may still use both arenas, so
// both are let go.
func (s *arenas) abandon(l lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range []*arena{l.in, l.out} {
		if a == nil {
			continue
		}
		a.close()
		if s.in == a {
			s.in, s.inBusy = nil, false
		}
		if s.out == a {
			s.out, s.outBusy = nil, false
		}
	}
}

// closeAll lets the idle arenas go and makes busy ones go when released.
func (s *arenas) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if !s.inBusy {
		s.in.close()
		s.in = nil
	}
	if !s.outBusy {
		s.out.close()
		s.out = nil
	}
}
