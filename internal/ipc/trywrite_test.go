package ipc

import (
	"bytes"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestSkipBytes(t *testing.T) {
	bufs := [][]byte{[]byte("abc"), []byte("de"), []byte("fgh")}
	for n, want := range []string{"abcdefgh", "bcdefgh", "cdefgh", "defgh", "efgh", "fgh", "gh", "h", ""} {
		got := bytes.Join(skipBytes(bufs, n), nil)
		if string(got) != want {
			t.Errorf("skipBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if string(bufs[0]) != "abc" {
		t.Errorf("skipBytes changed its argument: %q", bufs[0])
	}
}

// tryWrite sends what the socket takes and returns at once when it is
// full, never waiting for the reader.
func TestTryWriteStopsAtAFullSocket(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	rc := rawConnOf(conns[0])
	if rc == nil {
		t.Fatal("no raw conn for a Unix socket")
	}
	small := [][]byte{[]byte("header"), []byte("body")}
	if n, err := tryWrite(rc, small); err != nil || n != 10 {
		t.Fatalf("tryWrite(10 bytes) = %d, %v", n, err)
	}
	big := make([]byte, 64<<20) // more than any socket buffer
	n, err := tryWrite(rc, [][]byte{big})
	if err != nil || n <= 0 || n >= len(big) {
		t.Fatalf("tryWrite(64 MiB) = %d, %v; want part of it", n, err)
	}
	if n, err := tryWrite(rc, [][]byte{big}); err != nil || n != 0 {
		t.Fatalf("tryWrite on a full socket = %d, %v; want 0, nil", n, err)
	}
}
