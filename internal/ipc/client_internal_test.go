package ipc

import (
	"bufio"
	"context"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unixPair is a connected pair of Unix stream sockets.
func unixPair(t *testing.T) (server, stub *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// gatedConn holds every read until gate is closed: the reader goroutine of
// its link is scheduled late.
type gatedConn struct {
	*net.UnixConn
	gate chan struct{}
}

func (g *gatedConn) Read(p []byte) (int, error) {
	<-g.gate
	return g.UnixConn.Read(p)
}

// The stub exits right after answering FINALIZE, so both of its sockets
// close at once. When the control socket's end of stream is read first, the
// reply already waiting on the data socket must still reach Finalize.
func TestReplyWrittenBeforeTheStubExitsReachesItsCaller(t *testing.T) {
	data, stubData := unixPair(t)
	control, stubControl := unixPair(t)
	gate := make(chan struct{})
	c := NewClient(&gatedConn{UnixConn: data, gate: gate}, control, nil)
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Finalize(ctx) }()

	// The stub: read FINALIZE, answer it, exit.
	var hdr [headerSize]byte
	f, err := readFrame(bufio.NewReader(stubData), &hdr, nil)
	if err != nil || f.kind != kindFinalize {
		t.Fatalf("stub read %v, %v; want a FINALIZE frame", f.kind, err)
	}
	reply := make([]byte, headerSize)
	putHeader(reply, 0, kindFinalize, flagReply, f.seq)
	if _, err := stubData.Write(reply); err != nil {
		t.Fatal(err)
	}
	stubData.Close()
	stubControl.Close()

	select {
	case <-c.Done(): // the control connection's end of stream came first
	case <-ctx.Done():
		t.Fatal("the client did not see the control connection end")
	}
	close(gate)
	if err := <-errc; err != nil {
		t.Fatalf("finalize = %v, want the reply the stub sent before it exited", err)
	}
}

// A reader blocked answering the stub (the stub sends calls but stopped
// reading the answers) is woken by Close, although link.stop only shuts the
// socket: Close returns.
func TestCloseWakesAReaderBlockedOnItsReply(t *testing.T) {
	data, stubData := unixPair(t)
	control, stubControl := unixPair(t)
	defer stubData.Close()
	defer stubControl.Close() // after Close: a stopped stub keeps its socket
	c := NewClient(data, control, nil)

	// The stub: METRIC calls that want an answer, never reading one.
	call := []byte("{}")
	frame := make([]byte, headerSize+len(call))
	copy(frame[headerSize:], call)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for seq := uint32(1); ; seq++ {
			putHeader(frame, len(call), kindMetric, 0, seq)
			if _, err := stubControl.Write(frame); err != nil {
				return // the client is closed
			}
		}
	}()
	// Wait until the control reader is stuck writing an answer.
	deadline := time.Now().Add(30 * time.Second)
	for !blockedIn("replyToStub", "waitWrite") {
		if time.Now().After(deadline) {
			t.Fatal("the control reader never blocked on its answer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = c.Close()
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return while the control reader was blocked on a write")
	}
	<-sent
}

// blockedIn reports whether some goroutine's stack holds all of the given
// function names.
func blockedIn(names ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := true
		for _, n := range names {
			all = all && strings.Contains(g, n)
		}
		if all {
			return true
		}
	}
	return false
}
