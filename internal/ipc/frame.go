package ipc

import (
	"encoding/binary"
	"fmt"
	"io"
)

// headerSize is the size of a frame header; see the package documentation.
const headerSize = 12

// maxBody bounds the body of a frame the client will read. A larger length
// means the stream is corrupt (or something other than the stub writes to
// the socket), and allocating it would only make matters worse.
const maxBody = 1 << 31

// kind is the type of a frame.
type kind uint8

const (
	kindInit     kind = 1
	kindExecute  kind = 2
	kindPing     kind = 3
	kindHealth   kind = 4
	kindFinalize kind = 5
	// kindResponse (stub → server) is one response a request sent through
	// its response sender; see stream.go.
	kindResponse kind = 6
	// kindCancel (server → stub, on the control socket) tells the stub that
	// a request's client has gone.
	kindCancel kind = 7
	// Frames the stub starts on the data socket (call.go): a BLS request,
	// the server's responses to it, its cancellation, and model control.
	kindBLSInfer     kind = 8
	kindBLSResponse  kind = 9
	kindBLSCancel    kind = 10
	kindModelControl kind = 11
)

func (k kind) String() string {
	switch k {
	case kindInit:
		return "init"
	case kindExecute:
		return "execute"
	case kindPing:
		return "ping"
	case kindHealth:
		return "health"
	case kindFinalize:
		return "finalize"
	case kindLog:
		return "log"
	case kindMetric:
		return "metric"
	case kindResponse:
		return "response"
	case kindWithdraw:
		return "withdraw"
	case kindCancel:
		return "cancel"
	case kindBLSInfer:
		return "bls_infer"
	case kindBLSResponse:
		return "bls_response"
	case kindBLSCancel:
		return "bls_cancel"
	case kindModelControl:
		return "model_control"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Frame flags.
const (
	flagReply uint8 = 0x01
	flagError uint8 = 0x02
	// flagOutRegion (EXECUTE request): the frame's last descriptor is an
	// output arena lent to the stub for the batch's large outputs (arena.go).
	flagOutRegion uint8 = 0x04
	// flagInputsReleased (EXECUTE reply): the stub holds no view of the
	// batch's input arena, which may be reused.
	flagInputsReleased uint8 = 0x04
	// flagOutFiles (EXECUTE request): every request of the batch takes its
	// large outputs in memory files (replyfiles.go), so the stub may answer
	// with one sealed memory file of its own per response.
	flagOutFiles uint8 = 0x10
)

// frame is one decoded frame.
type frame struct {
	kind  kind
	flags uint8
	seq   uint32
	body  []byte
	fds   []int // descriptors that came with the frame; its consumer closes them
}

// putHeader writes a frame header for a body of n bytes into b[:headerSize].
func putHeader(b []byte, n int, k kind, flags uint8, seq uint32) {
	binary.LittleEndian.PutUint32(b[0:4], uint32(n))
	b[4] = byte(k)
	b[5] = flags
	b[6], b[7] = 0, 0
	binary.LittleEndian.PutUint32(b[8:12], seq)
}

// putFDCount records in a header how many descriptors come with the frame.
func putFDCount(b []byte, n int) { binary.LittleEndian.PutUint16(b[6:8], uint16(n)) }

// readFrame reads one frame. hdr is scratch space for the header, so that
// the reader loop does not allocate for bodiless frames. fds hands out the
// descriptors that came with frames; nil means none may come.
func readFrame(r io.Reader, hdr *[headerSize]byte, fds *fdReader) (frame, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	n := binary.LittleEndian.Uint32(hdr[0:4])
	f := frame{
		kind:  kind(hdr[4]),
		flags: hdr[5],
		seq:   binary.LittleEndian.Uint32(hdr[8:12]),
	}
	if uint64(n) > maxBody {
		return frame{}, fmt.Errorf("frame %s seq %d: body of %d bytes exceeds the %d-byte limit", f.kind, f.seq, n, uint64(maxBody))
	}
	if nfd := int(binary.LittleEndian.Uint16(hdr[6:8])); nfd > 0 {
		if fds == nil {
			return frame{}, fmt.Errorf("frame %s seq %d: %d descriptors on a connection that passes none", f.kind, f.seq, nfd)
		}
		var err error
		if f.fds, err = fds.take(nfd); err != nil {
			return frame{}, fmt.Errorf("frame %s seq %d: %w", f.kind, f.seq, err)
		}
	}
	if n > 0 {
		f.body = make([]byte, n)
		if _, err := io.ReadFull(r, f.body); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			closeFDs(f.fds)
			return frame{}, fmt.Errorf("frame %s seq %d: reading %d-byte body: %w", f.kind, f.seq, n, err)
		}
	}
	return f, nil
}
