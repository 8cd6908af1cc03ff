package grpc

import (
	"runtime"
	"sync"
	"weak"

	"google.golang.org/grpc/mem"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// A ModelInferRequest of at least sharedmemory.ShareThreshold bytes is
// copied by the codec into a memory file of the server's pool (package
// memfile) rather than into Go memory, so that its large raw inputs reach
// the stub as the file's descriptor and an output that is a view of one
// (an identity model's) goes to the transport from the same pages.
//
// The file follows the message: Unmarshal files it under the request,
// the handler takes it (requestFile) and owns it while the request runs;
// ModelInfer hands it on with the response (passResponseFile), whose
// Marshal lets the owner's reference go once every output in the file
// holds one of its own until the transport has written it; a streamed
// request hands each of its responses a reference of its own (File.Ref)
// and ends the owner's when the request ends. A message that
// is never taken (a handler that did not run) gives its file back once the
// message is unreachable.

// fileFor returns a file for a received message of data's size, or nil
// when the message is small or the pool takes no body now.
func (c *tensorCodec) fileFor(data mem.BufferSlice) *memfile.File {
	if c.files == nil || data.Len() < sharedmemory.ShareThreshold || !c.files.Accepting() {
		return nil
	}
	f, err := c.files.Get(data.Len())
	if err != nil {
		return nil // Go memory, then
	}
	return f
}

// fileTable holds the memory files of messages in flight, by a weak
// pointer to the message, so that the table never keeps a message alive.
type fileTable[T any] struct{ files sync.Map }

// put files f under m. If nobody takes it before m is unreachable, lost
// gets it.
func (t *fileTable[T]) put(m *T, f *memfile.File, lost func(*memfile.File)) {
	key := weak.Make(m)
	t.files.Store(key, f)
	runtime.AddCleanup(m, func(key weak.Pointer[T]) {
		if f, ok := t.files.LoadAndDelete(key); ok {
			lost(f.(*memfile.File))
		}
	}, key)
}

// take returns m's file and forgets it, or nil.
func (t *fileTable[T]) take(m *T) *memfile.File {
	f, ok := t.files.LoadAndDelete(weak.Make(m))
	if !ok {
		return nil
	}
	return f.(*memfile.File)
}

// requestFile takes the file m's raw contents are in, or nil. The caller
// owns it until File.End, unless it hands it on with passResponseFile.
func (c *tensorCodec) requestFile(m *pb.ModelInferRequest) *memfile.File {
	return c.requests.take(m)
}

// passResponseFile hands the ownership of f (nil: none) to m's Marshal.
func (c *tensorCodec) passResponseFile(m *pb.ModelInferResponse, f *memfile.File) {
	if f != nil {
		c.responses.put(m, f, (*memfile.File).Release) // answered, never sent
	}
}

// outputBuffer is a raw output handed to the transport: one in file f
// holds the file until the transport frees the buffer.
func outputBuffer(r []byte, f *memfile.File) mem.Buffer {
	if f == nil || !f.Contains(r) {
		return mem.SliceBuffer(r)
	}
	return mem.NewBuffer(&r, heldPool{f.Hold()})
}

// heldPool is the BufferPool of one output buffer: its Put, called when
// the transport frees the buffer, releases the file.
type heldPool struct{ release func() }

func (p heldPool) Get(int) *[]byte { panic("memory file outputs are not pooled") }
func (p heldPool) Put(*[]byte)     { p.release() }
