package rest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// DefaultMaxConcurrentRequestBytes bounds the request body bytes held by all
// requests at once when Config.MaxConcurrentRequestBytes is zero.
const DefaultMaxConcurrentRequestBytes int64 = 256 << 20

// firstChunk is the buffer a body starts with. Once it is full, a body
// whose length was announced (Content-Length) gets a buffer of that length
// at once; one of unknown length doubles as bytes arrive.
const firstChunk = 64 << 10

// byteBudget bounds the request body bytes buffered by all requests at once.
// A request reserves as its buffer grows and releases when its handler
// returns; a reservation over the budget fails at once (the request is
// answered 503), so that slow or large bodies cannot exhaust memory.
type byteBudget struct {
	limit int64 // ≤ 0: no bound

	mu   sync.Mutex
	used int64
}

func (b *byteBudget) reserve(n int64) bool {
	if b == nil || b.limit <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) release(n int64) {
	if b == nil || b.limit <= 0 || n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// lease is one request's share of the budget. It is given back once, when
// the request's context ends (its handler returned or the client left), or
// earlier by end; growth after that is given back at once.
type lease struct {
	b *byteBudget
	// stop disarms the release armed on the request's context.
	stop func() bool

	mu       sync.Mutex
	held     int64
	released bool
}

func (l *lease) grow(n int64) bool {
	if !l.b.reserve(n) {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		l.b.release(n)
		return true
	}
	l.held += n
	return true
}

// end gives the lease back now, from a handler about to return: the
// release armed on the request's context would otherwise run in a
// goroutine of its own once the context ends, for every request.
func (l *lease) end() {
	if l.stop() {
		l.release()
	}
}

func (l *lease) release() {
	l.mu.Lock()
	n := l.held
	l.held, l.released = 0, true
	l.mu.Unlock()
	l.b.release(n)
}

// inUse is the bytes reserved now (for tests).
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// newLease starts a request's share of the budget, given back when the
// request's context ends or by lease.end.
func (s *server) newLease(r *http.Request) *lease {
	l := &lease{b: s.budget}
	l.stop = context.AfterFunc(r.Context(), l.release)
	return l
}

// readBody reads the whole request body within the server's limit. A body
// over the limit is a TooLarge error (413), refused before reading when
// Content-Length already says so. The buffer grows as bytes arrive, never
// from Content-Length alone (a client announcing a large body and sending
// nothing holds only the first chunk), and never beyond the limit: once the
// first chunk is full, an announced body's buffer is sized to its
// Content-Length in one step, so that a large body is neither copied from
// buffer to buffer nor allocated several times. Every byte of the buffer is
// reserved from the server-wide budget until the handler returns.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, _, err := s.readBodyLease(r)
	return body, err
}

// readBodyLease is readBody, also returning the request's lease, so that
// what the handler derives from the body (a decompressed copy) is counted
// in the budget too.
func (s *server) readBodyLease(r *http.Request) ([]byte, *lease, error) {
	l := s.newLease(r)
	if s.maxBytes > 0 && r.ContentLength > s.maxBytes {
		return nil, l, apierr.New(apierr.TooLarge, "request body of %d bytes is over the limit of %d bytes (--max-request-bytes)", r.ContentLength, s.maxBytes)
	}
	if r.ContentLength == 0 {
		return nil, l, nil
	}
	// The most the buffer may ever need: the announced length, else the
	// limit (one byte more, to tell "at the limit" from "over it").
	capacity := int64(-1)
	switch {
	case r.ContentLength > 0:
		capacity = r.ContentLength
	case s.maxBytes > 0:
		capacity = s.maxBytes + 1
	}
	buf, err := readGrowing(r.Body, l, capacity, r.ContentLength > 0, s.maxBytes, func() error {
		return apierr.New(apierr.TooLarge, "request body is over the limit of %d bytes (--max-request-bytes)", s.maxBytes)
	}, func(err error) error { return bodyReadError(err, r.ContentLength) })
	if err != nil {
		return nil, l, err
	}
	if r.ContentLength > 0 && int64(len(buf)) < r.ContentLength {
		return nil, l, apierr.New(apierr.InvalidArgument, "cannot read request body of %d bytes: only %d arrived", r.ContentLength, len(buf))
	}
	return buf, l, nil
}

// errBudget is the answer when the server-wide byte budget is used up.
func errBudget() error {
	return &apierr.Error{Code: apierr.Unavailable, RetryAfter: time.Second,
		Msg: "the server is receiving too many request bytes at once (--max-concurrent-request-bytes); retry"}
}

// readGrowing reads rd to its end into a buffer that starts at firstChunk
// and doubles as bytes arrive, up to capacity (< 0: no cap), reserving
// every byte of it from l. With announced, capacity is the body's announced
// length: the buffer goes from the full first chunk to capacity in one
// step. More than limit bytes (> 0) is tooLarge(); a failed reservation is
// errBudget; a read error goes through readErr.
func readGrowing(rd io.Reader, l *lease, capacity int64, announced bool, limit int64, tooLarge func() error, readErr func(error) error) ([]byte, error) {
	grow := func(buf []byte, want int64) ([]byte, error) {
		if capacity > 0 && want > capacity {
			want = capacity
		}
		extra := want - int64(cap(buf))
		if extra <= 0 {
			return buf, nil
		}
		if !l.grow(extra) {
			return nil, errBudget()
		}
		nb := make([]byte, len(buf), want)
		copy(nb, buf)
		return nb, nil
	}
	buf, err := grow(nil, firstChunk)
	if err != nil {
		return nil, err
	}
	for {
		if len(buf) == cap(buf) {
			if capacity > 0 && int64(len(buf)) >= capacity {
				break
			}
			want := 2 * int64(cap(buf))
			if announced && capacity > 0 {
				want = capacity
			}
			if buf, err = grow(buf, want); err != nil {
				return nil, err
			}
		}
		n, rerr := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if limit > 0 && int64(len(buf)) > limit {
			return nil, tooLarge()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, readErr(rerr)
		}
	}
	return buf, nil
}

// bodyReadError classifies a failed body read: a read deadline (the body did
// not arrive within --body-read-timeout) or a broken connection.
func bodyReadError(err error, announced int64) error {
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return apierr.Wrap(apierr.InvalidArgument, err, "the request body did not arrive within the body read timeout (--body-read-timeout)")
	}
	if announced > 0 {
		return apierr.Wrap(apierr.InvalidArgument, err, "cannot read request body of %d bytes", announced)
	}
	return apierr.Wrap(apierr.InvalidArgument, err, "cannot read request body")
}

// checkUTF8 refuses JSON text that is not valid UTF-8: encoding/json would
// silently replace the bad bytes with U+FFFD, changing the request.
func checkUTF8(b []byte, what string) error {
	if utf8.Valid(b) {
		return nil
	}
	at := 0
	for at < len(b) {
		r, size := utf8.DecodeRune(b[at:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		at += size
	}
	return apierr.New(apierr.InvalidArgument, "%s is not valid UTF-8 (invalid byte 0x%02x at offset %d)", what, b[at], at)
}

// readInferBody reads an inference request's body: into a memory file of
// the server's pool when fileBody says so (file is then set, and the
// caller owns it), else into Go memory, decompressed. A file that cannot be
// made sends this body and every later one to Go memory.
func (s *server) readInferBody(r *http.Request) (body []byte, l *lease, file *memfile.File, err error) {
	if hlen, ok := s.fileBody(r); ok {
		f, err := s.files.Get(int(bodyPad(hlen) + r.ContentLength))
		if err == nil {
			l = s.newLease(r)
			if body, err = s.bodyFile(r, l, f, hlen); err != nil {
				return nil, l, nil, err
			}
			return body, l, f, nil
		}
		if !s.filesFailed.Swap(true) {
			s.log.Warn("no memory file for large request bodies; reading them into memory", "err", err)
		}
	}
	body, l, err = s.readBodyLease(r)
	if err == nil {
		body, err = s.decompress(body, r.Header.Get("Content-Encoding"), l)
	}
	return body, l, nil, err
}

// fileBody reports whether an inference request's body goes into a memory
// file (bodyFile) rather than Go memory: a binary body (the JSON header's
// length announced) of at least sharedmemory.ShareThreshold bytes,
// announced and within the limit, not compressed, and the server keeps
// body files (and its pool takes them now). It returns the header's length.
func (s *server) fileBody(r *http.Request) (headerLen int64, ok bool) {
	if s.files == nil || s.filesFailed.Load() || r.ContentLength < sharedmemory.ShareThreshold || (s.maxBytes > 0 && r.ContentLength > s.maxBytes) || !s.files.Accepting() {
		return 0, false
	}
	if enc := strings.TrimSpace(r.Header.Get("Content-Encoding")); enc != "" && !strings.EqualFold(enc, "identity") {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(r.Header.Get(headerContentLength)), 10, 64)
	if err != nil || n <= 0 || n > r.ContentLength {
		return 0, false // splitInferBody names what is wrong
	}
	return n, true
}

// bodyFile reads a body that fileBody accepted into f, a memory file of
// the server's pool with room for bodyPad(headerLen) bytes and the body,
// placed after that padding so that the binary data after the JSON header
// of headerLen bytes starts 64-byte aligned (numpy's aligned loops, and
// the alignment of the stub's arenas). The buffer is reserved from l as
// readBody's is: the first chunk, then the rest once it is full. On an
// error f is released.
func (s *server) bodyFile(r *http.Request, l *lease, f *memfile.File, headerLen int64) ([]byte, error) {
	size := r.ContentLength
	pad := bodyPad(headerLen)
	first := min(size, firstChunk)
	if !l.grow(first) {
		f.Release()
		return nil, errBudget()
	}
	body := f.Bytes()[pad : pad+size : pad+size]
	n, err := io.ReadFull(r.Body, body[:first])
	if err == nil && size > first {
		if !l.grow(size - first) {
			f.Release()
			return nil, errBudget()
		}
		var m int
		m, err = io.ReadFull(r.Body, body[first:])
		n += m
	}
	if err != nil {
		f.Release()
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, apierr.New(apierr.InvalidArgument, "cannot read request body of %d bytes: only %d arrived", size, n)
		}
		return nil, bodyReadError(err, size)
	}
	return body, nil
}

// bodyPad is the padding before a body in its memory file that makes the
// binary data after its JSON header of headerLen bytes 64-byte aligned.
func bodyPad(headerLen int64) int64 { return (64 - headerLen%64) % 64 }
