package sharedmemory

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/vigilhq/vigil/internal/apierr"
)

// mapping is one mmap of a shared memory object: whole pages from the page
// that holds the region's first byte, and data, the region's bytes within.
// It keeps two descriptors of the object open for model stubs, which map
// the region themselves (tensor.Shared): rw, read-write, for outputs a stub
// writes, and ro, read-only, for inputs, so that a stub can never write into
// a client's input region.
type mapping struct {
	pages  []byte
	data   []byte
	rw, ro int
}

// mapObject opens object in dir read-write and maps byteSize bytes at
// offset. The object must be a regular file (no symlink is followed, so a
// key cannot point the server at a file outside the shared memory
// directory) at least offset+byteSize bytes long. Unlike Triton, offset
// need not be page-aligned: the mapping starts at the page that holds it.
func mapObject(dir, name, key, object string, offset, byteSize uint64) (*mapping, error) {
	path := filepath.Join(dir, object)
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, apierr.Wrap(apierr.Internal, err, "Unable to open shared memory region: '%s'", key)
	}
	keep := false
	defer func() {
		if !keep {
			syscall.Close(fd)
		}
	}()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, apierr.Wrap(apierr.Internal, err, "Invalid shared memory region: '%s'", key)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, apierr.New(apierr.InvalidArgument, "Invalid shared memory region: '%s': %s is not a regular file", key, path)
	}
	size := uint64(st.Size)
	if offset > size || byteSize > size-offset {
		return nil, apierr.New(apierr.InvalidArgument,
			"failed to register shared memory region '%s': invalid args: offset %d + byte_size %d is over the %d bytes of '%s'",
			name, offset, byteSize, size, key)
	}
	page := uint64(os.Getpagesize())
	start := offset &^ (page - 1)
	length := offset + byteSize - start
	if length > uint64(int(^uint(0)>>1)) {
		return nil, apierr.New(apierr.InvalidArgument, "failed to register shared memory region '%s': invalid args: byte_size %d is too large", name, byteSize)
	}
	pages, err := syscall.Mmap(fd, int64(start), int(length), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, apierr.Wrap(apierr.InvalidArgument, err, "failed to register shared memory region '%s': unable to process address space", name)
	}
	// The same object, read-only (through the descriptor, so that no
	// rename or unlink in between can make it another file).
	ro, err := syscall.Open("/proc/self/fd/"+strconv.Itoa(fd), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		_ = syscall.Munmap(pages)
		return nil, apierr.Wrap(apierr.Internal, err, "Unable to open shared memory region: '%s' read-only", key)
	}
	keep = true
	lo := offset - start
	return &mapping{pages: pages, data: pages[lo : lo+byteSize : lo+byteSize], rw: fd, ro: ro}, nil
}

func (m *mapping) unmap() error {
	if m.pages == nil {
		return nil
	}
	err := syscall.Munmap(m.pages)
	_ = syscall.Close(m.rw)
	_ = syscall.Close(m.ro)
	m.pages, m.data = nil, nil
	return err
}

// guard runs fn, which touches mapped memory, turning a fault (SIGBUS when
// the client shrank the object under the mapping) into an error instead of
// a crash of the server.
func guard(region string, fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = apierr.New(apierr.InvalidArgument,
				"shared memory region '%s' faulted on access (was the object truncated after it was registered?): %v", region, p)
		}
	}()
	fn()
	return nil
}
