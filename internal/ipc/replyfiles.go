package ipc

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/tensor"
)

// A batch whose requests all take their large outputs in memory files
// (inference.Request.OutputFiles: BLS calls whose caller stub receives
// descriptors) goes to the stub with flagOutFiles. The stub then writes
// each response's large numeric outputs into one memory file it makes for
// that response (64-byte aligned offsets, sealed against writing, growing
// and shrinking), sends the files with the reply and points those records
// at them. The server checks each file's seals and maps it read-only, as
// it does a call's inputs (callfiles.go), and the outputs become
// tensor.Shared views of the mapping: no byte of them is copied in Go.
// Call.Respond passes the descriptor on to the caller's stub with the
// BLS_RESPONSE.
//
// A response owns its file (one response per file, so that a caller is
// given no other request's outputs). Its Release closes and unmaps it:
// Call.Respond calls it once the BLS_RESPONSE is written (or could not be),
// and whoever drops the response instead calls it too; should nobody, the
// file goes once no output viewing it is reachable.
//
// An output that is a view of one of the request's inputs in a sealed
// memory file (a BLS caller's, passed as a region: regions.go) is a
// tensor.Shared view of that file too, rather than a copy; the call's own
// reference keeps the file until its response is written.

// replyFiles are the memory files one EXECUTE reply passed with
// flagOutFiles, by descriptor index.
type replyFiles struct {
	fds   []int
	files []*callFiles // nil until a response's output uses the descriptor
	owner []int        // the response each used descriptor belongs to
}

func newReplyFiles(fds []int) *replyFiles {
	return &replyFiles{fds: fds, files: make([]*callFiles, len(fds)), owner: make([]int, len(fds))}
}

// view is size bytes at off of descriptor idx, an output of response resp.
func (r *replyFiles) view(resp int, idx uint32, off, size uint64) (*tensor.Shared, error) {
	if int(idx) >= len(r.fds) {
		return nil, fmt.Errorf("tensor in descriptor %d, %d came with the frame", idx, len(r.fds))
	}
	f := r.files[idx]
	if f == nil {
		f = newCallFiles([]int{r.fds[idx]}, nil)
		r.files[idx], r.owner[idx] = f, resp
	} else if r.owner[idx] != resp {
		return nil, fmt.Errorf("descriptor %d holds outputs of responses %d and %d; each response has a file of its own", idx, r.owner[idx], resp)
	}
	return f.view(0, off, size)
}

// releaser is response resp's Release, or nil when it has no file: it
// closes and unmaps the response's files, at once or, uncalled, once no
// view of them is reachable.
func (r *replyFiles) releaser(resp int) func() {
	var rels []func()
	for idx, f := range r.files {
		if f == nil || r.owner[idx] != resp {
			continue
		}
		rel := sync.OnceFunc(f.release)
		f.mu.Lock()
		a := f.anchor.Value()
		f.mu.Unlock()
		if a == nil {
			rel() // no view was made
			continue
		}
		cleanup := runtime.AddCleanup(a, func(rel func()) { rel() }, rel)
		rels = append(rels, func() { cleanup.Stop(); rel() })
	}
	if len(rels) == 0 {
		return nil
	}
	return sync.OnceFunc(func() {
		for _, rel := range rels {
			rel()
		}
	})
}

// drop closes the files of response resp at once (its outputs are not
// passed on).
func (r *replyFiles) drop(resp int) {
	for idx, f := range r.files {
		if f != nil && r.owner[idx] == resp {
			f.release()
			r.files[idx], r.fds[idx] = nil, -1
		}
	}
}

// finish closes the descriptors no response took; with failed (the reply
// is not passed on), the taken ones too.
func (r *replyFiles) finish(failed bool) {
	if r == nil {
		return
	}
	for idx, f := range r.files {
		switch {
		case f == nil && r.fds[idx] >= 0:
			closeFDs(r.fds[idx : idx+1])
		case f != nil && failed:
			f.release()
		}
	}
	r.files = nil
}

// replyData is outOfBandData for an EXECUTE reply whose batch takes output
// files (rf non-nil): an output in one of the reply's descriptors, or a
// view of an input in a sealed file passed as a region, becomes a Shared
// view; anything else is outOfBandData's.
func replyData(c *cursor, fds []int, l lease, rf *replyFiles, resp int, size uint64) ([]byte, *tensor.Shared) {
	if rf == nil || c.err != nil || len(c.b) < 12 {
		return outOfBandData(c, fds, l, resp, size), nil
	}
	idx := binary.LittleEndian.Uint32(c.b)
	var s *tensor.Shared
	var err error
	switch {
	case int(idx) < len(fds):
		s, err = rf.view(resp, idx, binary.LittleEndian.Uint64(c.b[4:]), size)
	case idx >= requestFDBase && idx < inputArenaIndex:
		s = l.regions.sealedView(int(idx-requestFDBase), binary.LittleEndian.Uint64(c.b[4:]), size)
		if s == nil {
			return outOfBandData(c, fds, l, resp, size), nil
		}
	default:
		return outOfBandData(c, fds, l, resp, size), nil
	}
	c.take(12)
	if err != nil {
		c.fail(fmt.Errorf("out-of-band tensor: %w", err))
		return nil, nil
	}
	return s.Mem, s
}

// sealedView is a Shared view of size bytes at off of the request's
// descriptor i when that is a read-only region of a sealed memory file a
// stub made (a BLS caller's inputs) and the bytes lie within an input
// passed there; nil otherwise. Such a file cannot shrink under the
// server's mapping, so its bytes need no copy.
func (t *regionTable) sealedView(i int, off, size uint64) *tensor.Shared {
	if t == nil || i-t.base < 0 || i-t.base >= len(t.entries) {
		return nil
	}
	e := &t.entries[i-t.base]
	if e.access != accessRead || e.id&callFileID == 0 {
		return nil
	}
	for _, sp := range e.spans {
		s := sp.s
		if off < s.Offset || off-s.Offset > uint64(len(s.Mem)) || size > uint64(len(s.Mem))-(off-s.Offset) {
			continue
		}
		at := off - s.Offset
		return &tensor.Shared{FD: s.FD, Offset: off, ID: s.ID, Mem: s.Mem[at : at+size : at+size], Hold: s.Hold}
	}
	return nil
}

// outputFiles reports whether a batch's large outputs may come in the
// stub's own memory files: every request takes them.
func outputFiles(reqs []*inference.Request) bool {
	for _, r := range reqs {
		if !r.OutputFiles {
			return false
		}
	}
	return len(reqs) > 0
}
