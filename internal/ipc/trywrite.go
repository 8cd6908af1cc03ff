package ipc

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawConnOf returns the descriptor-level access to a connection, or nil
// when it has none (tests' in-memory pipes).
func rawConnOf(rw any) syscall.RawConn {
	sc, ok := rw.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// tryWrite makes one non-blocking attempt to write bufs, and returns how
// many bytes went out. A frame that fits in the socket's send buffer, as
// every frame does unless the stub stopped reading or the frame is large,
// goes out whole this way, with no write deadline armed on the caller's
// context (context.AfterFunc and its stop cost more than the write). A
// full socket (EAGAIN) or a signal (EINTR) is not an error: the caller
// writes the rest the ordinary way.
func tryWrite(rc syscall.RawConn, bufs [][]byte) (int, error) {
	var n int
	var err error
	cerr := rc.Write(func(fd uintptr) bool {
		if len(bufs) == 1 {
			n, err = syscall.Write(int(fd), bufs[0])
		} else {
			n, err = unix.Writev(int(fd), bufs)
		}
		return true // one attempt: never wait for the socket here
	})
	if n < 0 {
		n = 0
	}
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		err = nil
	}
	if cerr != nil {
		err = cerr
	}
	return n, err
}

// skipBytes returns bufs without their first n bytes.
func skipBytes(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		rest := make([][]byte, len(bufs))
		copy(rest, bufs)
		rest[0] = rest[0][n:]
		bufs = rest
	}
	return bufs
}

func totalLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}
