package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Large tensors travel out of band: their bytes are in a memory file
// (memfd) whose descriptor rides with the frame (SCM_RIGHTS on the data
// socket), not in the frame body, instead of the two sides passing the
// bytes through the socket buffer in ~200 KB turns (arena.go says which
// files). Descriptors are reference-counted by the kernel: a memory file
// lives while a descriptor or a mapping of it exists, in either process, so
// a stub that dies holding one leaks nothing, and neither does a frame
// dropped in flight.
//
// On the wire a frame's header says how many descriptors came with it (the
// two reserved bytes); they are numbered from 0 in the order sent. A tensor
// record whose datatype byte has outOfBand set is followed by
//
//	u32 descriptor index | u64 offset
//
// and its data (the record's length, at that offset of that file) takes no
// room in the frame's data section. The offset lets one file hold several
// tensors, or a tensor sit inside a larger region.

// DefaultShmThreshold is the tensor size, in bytes, from which tensors
// travel out of band: below it, one more copy through the socket costs less
// than creating, mapping and releasing a memory file.
const DefaultShmThreshold = 256 << 10

// outOfBand marks a tensor record whose data is in a passed descriptor.
const outOfBand = 0x80

// maxFrameFDs bounds the descriptors one frame may carry (the kernel's own
// limit for one message is 253).
const maxFrameFDs = 253

// fdOOBSpace is room for the control message of one frame's descriptors.
var fdOOBSpace = syscall.CmsgSpace(maxFrameFDs * 4)

// readTensorFile reads n bytes at off of fd into a new buffer.
func readTensorFile(fd int, off, n uint64) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	if off > uint64(st.Size) || n > uint64(st.Size)-off {
		return nil, fmt.Errorf("%d bytes at offset %d overrun the %d-byte region", n, off, st.Size)
	}
	b := make([]byte, n)
	for got := uint64(0); got < n; {
		k, err := unix.Pread(fd, b[got:], int64(off+got))
		if err != nil {
			return nil, fmt.Errorf("reading the region: %w", err)
		}
		if k == 0 {
			return nil, fmt.Errorf("region ended after %d of %d bytes", got, n)
		}
		got += uint64(k)
	}
	return b, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// fdReader reads a Unix socket with recvmsg, keeping the descriptors that
// arrive until frames claim them. The kernel delivers a message's
// descriptors with its first byte, so by the time a frame's header has been
// read its descriptors have arrived, and frames claim them in order.
type fdReader struct {
	conn *net.UnixConn
	oob  []byte
	fds  []int // arrived, not yet claimed
}

func newFDReader(conn *net.UnixConn) *fdReader {
	return &fdReader{conn: conn, oob: make([]byte, fdOOBSpace)}
}

func (r *fdReader) Read(p []byte) (int, error) {
	n, oobn, flags, _, err := r.conn.ReadMsgUnix(p, r.oob)
	if oobn > 0 {
		msgs, perr := syscall.ParseSocketControlMessage(r.oob[:oobn])
		if perr != nil && err == nil {
			err = fmt.Errorf("parsing control message: %w", perr)
		}
		for i := range msgs {
			fds, ferr := syscall.ParseUnixRights(&msgs[i])
			if ferr == nil {
				r.fds = append(r.fds, fds...)
			}
		}
	}
	if flags&syscall.MSG_CTRUNC != 0 && err == nil {
		err = errors.New("descriptors sent with a frame were truncated")
	}
	if n < 0 {
		n = 0
	}
	if n == 0 && err == nil && len(p) > 0 {
		err = io.EOF // recvmsg's end of stream
	}
	return n, err
}

// take hands the next n arrived descriptors to a frame.
func (r *fdReader) take(n int) ([]int, error) {
	if n > len(r.fds) {
		return nil, fmt.Errorf("frame says %d descriptors came with it, %d arrived", n, len(r.fds))
	}
	out := append([]int(nil), r.fds[:n]...)
	r.fds = r.fds[n:]
	return out, nil
}

// closeAll closes descriptors no frame claimed.
func (r *fdReader) closeAll() {
	closeFDs(r.fds)
	r.fds = nil
}

// Descriptor indexes in an out-of-band record of an EXECUTE reply that
// name the request's arenas rather than a descriptor of the reply: the
// output arena it lent, and its input arena (an output that is a view of an
// input, as an identity model returns, is not copied by the stub at all).
const (
	regionIndex     = 0xFFFFFFFF
	inputArenaIndex = 0xFFFFFFFE
)

// outOfBandData copies out an out-of-band tensor record's data: the
// descriptor index and offset follow the record in the meta.
func outOfBandData(c *cursor, fds []int, l lease, resp int, size uint64) []byte {
	idx, off := c.u32(), c.u64()
	if c.err != nil {
		return nil
	}
	if idx >= requestFDBase && idx < inputArenaIndex {
		b, err := l.regions.regionData(int(idx-requestFDBase), off, size, resp)
		if err != nil {
			c.fail(fmt.Errorf("out-of-band tensor: %w", err))
		}
		return b
	}
	if idx == regionIndex || idx == inputArenaIndex {
		a, what := l.out, "output"
		if idx == inputArenaIndex {
			a, what = l.in, "input"
		}
		if a == nil {
			c.fail(fmt.Errorf("tensor in the %s arena, but the request lent none", what))
			return nil
		}
		if off > uint64(len(a.mem)) || size > uint64(len(a.mem))-off {
			c.fail(fmt.Errorf("%d bytes at offset %d overrun the %d-byte %s arena", size, off, len(a.mem), what))
			return nil
		}
		// Cloned rather than made and copied: the runtime does not zero
		// memory that the copy overwrites.
		return bytes.Clone(a.mem[off : off+size])
	}
	if int(idx) >= len(fds) {
		c.fail(fmt.Errorf("tensor in descriptor %d, %d came with the frame", idx, len(fds)))
		return nil
	}
	b, err := readTensorFile(fds[idx], off, size)
	if err != nil {
		c.fail(fmt.Errorf("out-of-band tensor: %w", err))
		return nil
	}
	return b
}

func appendOutOfBand(b []byte, idx int, off uint64) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(idx))
	return binary.LittleEndian.AppendUint64(b, off)
}

// writeWithFDs writes a frame whose descriptors go with its first bytes.
func writeWithFDs(w io.Writer, bufs [][]byte, fds []int) (int64, error) {
	uc, ok := w.(*net.UnixConn)
	if !ok {
		return 0, errors.New("descriptors on a connection that cannot pass them")
	}
	n, _, err := uc.WriteMsgUnix(bufs[0], syscall.UnixRights(fds...), nil)
	if err != nil {
		return int64(n), err
	}
	rest := append(net.Buffers{bufs[0][n:]}, bufs[1:]...)
	m, err := rest.WriteTo(uc)
	return int64(n) + m, err
}
