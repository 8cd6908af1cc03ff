package ipc

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

func memFile(t *testing.T, data []byte, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Skipf("memfd_create: %v", err)
	}
	if _, err := unix.Pwrite(fd, data, 0); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

func TestCallFilesViewAndRelease(t *testing.T) {
	fd := memFile(t, []byte("0123456789"), requiredSeals)
	f := newCallFiles([]int{fd}, nil)
	s, err := f.view(0, 2, 5)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Mem) != "23456" || s.FD != fd || s.Offset != 2 || s.ID&callFileID == 0 {
		t.Fatalf("view %+v", s)
	}
	if _, err := f.view(0, 8, 5); err == nil || !strings.Contains(err.Error(), "overrun") {
		t.Fatalf("overrun: %v", err)
	}
	if _, err := f.view(1, 0, 1); err == nil || !strings.Contains(err.Error(), "descriptor 1, 1 came") {
		t.Fatalf("missing descriptor: %v", err)
	}
	release := s.Hold()
	f.release() // the call ended; the Hold keeps the file
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("closed while held: %v", err)
	}
	release()
	release() // idempotent
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Fatal("descriptor open after the last release")
	}
}

func TestCallFilesRefuseUnsealed(t *testing.T) {
	fd := memFile(t, []byte("0123456789"), unix.F_SEAL_SHRINK)
	f := newCallFiles([]int{fd}, nil)
	defer f.release()
	if _, err := f.view(0, 0, 4); err == nil || !strings.Contains(err.Error(), "sealed") {
		t.Fatalf("unsealed file: %v", err)
	}
}

func TestCallFilesReleaseAfterTheRequestIsUnreachable(t *testing.T) {
	fd := memFile(t, []byte("0123456789"), requiredSeals)
	f := newCallFiles([]int{fd}, nil)
	s, err := f.view(0, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	r := &inference.Request{ID: "r", Inputs: []tensor.Tensor{{Name: "IN", Data: s.Mem, Shared: s}}}
	s = nil
	f.releaseWhenUnused()
	open := func() bool {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		return err == nil
	}
	if !open() {
		t.Fatal("closed while the request is reachable")
	}
	// A request made from it (an ensemble step's) keeps a copy of the
	// tensor: the files stay while the copy is reachable.
	step := &inference.Request{ID: "step", Inputs: []tensor.Tensor{r.Inputs[0]}}
	runtime.KeepAlive(r)
	r = nil
	for range 5 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		if !open() {
			t.Fatal("closed while a copy of the request's tensor is reachable")
		}
	}
	runtime.KeepAlive(step)
	step = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if !open() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("descriptor still open after no tensor viewing it was reachable")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
