package ipc

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Client shared memory (a client's registered system shared memory
// regions, tensor.Shared) reaches the stub as the region's own descriptor:
// the server copies none of its bytes. An EXECUTE that passes regions has
// flag flagRegions; its descriptors are the input arena's (if used), then
// one per region object, then the output arena's (if lent), and its meta
// starts with the region table
//
//	u32 number of regions | per region: u32 descriptor index | u64 registration id | u8 access
//
// access 0 is a read-only descriptor holding inputs, 1 a read-write one
// holding room for requested outputs, 2 a read-only descriptor of a memory
// file the server reuses (a large request body's, package memfile). The
// registration id is unique for the server's life, so the stub may keep a
// mapping of a client's region under it from batch to batch and never
// hands a later registration's request an old one. A reused file the stub
// maps privately for the batch alone (a model may write its inputs, as in
// Triton, without the file changing) and unmaps after execute: the reply's
// flag flagFilesReleased says none of its arrays outlived the batch, and
// without it the server never reuses the file (tensor.Shared.Kept). With
// the flag, every requested output record is followed by
//
//	u32 descriptor index (0xFFFFFFFF: none) | u64 offset | u64 room
//
// naming where the client wants the output: the stub writes an output that
// fits there itself. In the reply, an out-of-band record whose descriptor
// index is requestFDBase + i points at the request's descriptor i at the
// offset given (an offset within the object, as the request's are): an
// output the stub wrote into its room, or an output that is a view of an
// input region. The server checks both against what it passed: a written
// output must lie within its room (its Data is then the server's own
// mapping of that room, so nothing is copied), a view within an input's
// bytes (read with pread, so that a region the client shrank is an error,
// not a fault; a reused file cannot shrink, so a view of the same
// request's input in one is its bytes, not a copy).

// flagRegions (EXECUTE request): the frame passes client shared memory and
// its meta has the region table.
const flagRegions uint8 = 0x08

// requestFDBase starts the reply's descriptor indexes that name the
// request's own descriptors.
const requestFDBase = 0x80000000

// Access of a region descriptor.
const (
	accessRead  = 0
	accessWrite = 1
	accessFile  = 2
)

// flagFilesReleased (EXECUTE reply): no array over the batch's reused
// memory files (access 2) outlived the batch in the stub.
const flagFilesReleased uint8 = 0x08

// noDest is the descriptor index of a requested output without a room.
const noDest = 0xFFFFFFFF

// regionTable is the client shared memory one EXECUTE passes.
type regionTable struct {
	base    int // frame index of the first region's descriptor
	entries []regionEntry
	byFD    map[int]int // descriptor → entry
	holds   []func()    // releases of the Holds taken for the batch
}

type regionEntry struct {
	fd, access int
	id         uint64
	// spans are the tensors' bytes in the object: inputs' (a reply's view
	// must lie within one) or rooms for outputs.
	spans []span
}

// span is one tensor's bytes in a region, and the batch index of the
// request they belong to.
type span struct {
	s   *tensor.Shared
	req int
}

// collectRegions lists the regions reqs use and takes a Hold on each, or
// returns nil when they use none.
func collectRegions(reqs []*inference.Request) *regionTable {
	var t *regionTable
	add := func(s *tensor.Shared, access, req int) {
		if access == accessRead && s.Kept != nil {
			access = accessFile
		}
		if t == nil {
			t = &regionTable{byFD: map[int]int{}}
		}
		i, ok := t.byFD[s.FD]
		if !ok {
			i = len(t.entries)
			t.byFD[s.FD] = i
			t.entries = append(t.entries, regionEntry{fd: s.FD, access: access, id: s.ID})
		}
		t.entries[i].spans = append(t.entries[i].spans, span{s, req})
		if s.Hold != nil {
			t.holds = append(t.holds, s.Hold())
		}
	}
	for i, r := range reqs {
		for j := range r.Inputs {
			if s := r.Inputs[j].Shared; s != nil {
				add(s, accessRead, i)
			}
		}
		for j := range r.Outputs {
			if d := r.Outputs[j].Dest; d != nil {
				add(d, accessWrite, i)
			}
		}
	}
	return t
}

// release ends the batch's Holds; it is nil-safe and idempotent.
// filesFree says the stub holds no array over the batch's reused files;
// without it each is marked kept (never reused) first.
func (t *regionTable) release(filesFree bool) {
	if t == nil {
		return
	}
	if !filesFree {
		for _, e := range t.entries {
			if e.access == accessFile {
				for _, sp := range e.spans {
					sp.s.Kept()
				}
			}
		}
	}
	holds := t.holds
	t.holds = nil
	for _, h := range holds {
		h()
	}
}

// fds are the regions' descriptors in frame order.
func (t *regionTable) fds() []int {
	out := make([]int, len(t.entries))
	for i, e := range t.entries {
		out[i] = e.fd
	}
	return out
}

// index is the frame index of a region's descriptor.
func (t *regionTable) index(s *tensor.Shared) int { return t.base + t.byFD[s.FD] }

func (t *regionTable) metaSize() int { return 4 + 13*len(t.entries) }

func (t *regionTable) appendMeta(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(t.entries)))
	for i, e := range t.entries {
		b = binary.LittleEndian.AppendUint32(b, uint32(t.base+i))
		b = binary.LittleEndian.AppendUint64(b, e.id)
		b = append(b, uint8(e.access))
	}
	return b
}

// appendDest appends a requested output's room record.
func (t *regionTable) appendDest(b []byte, d *tensor.Shared) []byte {
	if d == nil {
		b = binary.LittleEndian.AppendUint32(b, noDest)
		return append(b, make([]byte, 16)...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(t.index(d)))
	b = binary.LittleEndian.AppendUint64(b, d.Offset)
	return binary.LittleEndian.AppendUint64(b, uint64(len(d.Mem)))
}

// regionData resolves a reply's out-of-band record that points at the
// request's descriptor i: the output's bytes, checked against what the
// request passed there. resp is the batch index of the response.
func (t *regionTable) regionData(i int, off, size uint64, resp int) ([]byte, error) {
	if t == nil || i-t.base < 0 || i-t.base >= len(t.entries) {
		return nil, fmt.Errorf("tensor in the request's descriptor %d, which is no client region", i)
	}
	e := &t.entries[i-t.base]
	for _, sp := range e.spans {
		s := sp.s
		if off < s.Offset || off-s.Offset > uint64(len(s.Mem)) || size > uint64(len(s.Mem))-(off-s.Offset) {
			continue
		}
		at := off - s.Offset
		switch {
		case e.access == accessWrite:
			// Written by the stub into the client's room: the server's
			// mapping of it holds the bytes already.
			return s.Mem[at : at+size : at+size], nil
		case e.access == accessFile && sp.req == resp:
			// A view of the same request's input in a reused file, which
			// cannot shrink and is not reused before the request is
			// answered: its bytes as they are.
			return s.Mem[at : at+size : at+size], nil
		case e.access == accessFile:
			// Another request's: that one may be answered, and its file
			// reused, first.
			return bytes.Clone(s.Mem[at : at+size]), nil
		}
		// A view of an input: its bytes are copied by the kernel, so that
		// a region the client shrank meanwhile is an error, not a fault.
		return readTensorFile(e.fd, off, size)
	}
	what := "input"
	if e.access == accessWrite {
		what = "output room"
	}
	return nil, fmt.Errorf("%d bytes at offset %d of the request's descriptor %d are outside every %s passed there", size, off, i, what)
}

// sharedInput reports whether an input travels as its region's descriptor.
func sharedInput(t *regionTable, in *tensor.Tensor) bool {
	return t != nil && in.Shared != nil
}

// holdUntilReply keeps a batch's region Holds until its reply is in:
// replyIn for a reply its caller takes, the reader for a late one that it
// drops, shutdown when the connection ends first.
func (c *Client) holdUntilReply(seq uint32, t *regionTable) {
	if t == nil {
		return
	}
	c.mu.Lock()
	if c.cause == nil {
		if c.regionHolds == nil {
			c.regionHolds = map[uint32]*regionTable{}
		}
		c.regionHolds[seq] = t
		t = nil
	}
	c.mu.Unlock()
	t.release(true) // the connection is gone: nothing will be read
}

// replyIn releases the Holds of the batch whose reply came in (or will
// never come: it was not sent). filesFree is the reply's
// flagFilesReleased (true when nothing was sent). It does nothing for a
// seq without Holds.
func (c *Client) replyIn(seq uint32, filesFree bool) {
	c.mu.Lock()
	t := c.regionHolds[seq]
	delete(c.regionHolds, seq)
	c.mu.Unlock()
	t.release(filesFree)
}

// releaseAllRegions releases every batch's Holds (the connection ended).
func (c *Client) releaseAllRegions() {
	c.mu.Lock()
	held := c.regionHolds
	c.regionHolds = nil
	c.mu.Unlock()
	// The stub is gone: none of its arrays is left.
	for _, t := range held {
		t.release(true)
	}
}
