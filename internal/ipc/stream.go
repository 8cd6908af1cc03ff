package ipc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
)

// RESPONSE frames (kind 6, stub → server, on the data socket) carry the
// responses that requests send through their response senders: any number
// per request, from any thread of the stub, before or after execute
// returned. The frame's sequence id is the EXECUTE's, and the body is
//
//	u32 request index in the batch | u8 flags (0x01 FINAL) | 3 bytes zero |
//	u32 meta length | meta | tensor data
//
// with the meta of an EXECUTE reply holding zero responses (a flag-only
// FINAL) or one. CANCEL frames (kind 7, server → stub, on the control
// socket) have the EXECUTE's sequence id and the body u32 request index;
// the stub answers nothing and makes is_cancelled() true.

// responseFinal is the FINAL flag of a RESPONSE frame
// (TRITONSERVER_RESPONSE_COMPLETE_FINAL).
const responseFinal = 0x01

// Sink receives the responses that a batch's requests send through their
// response senders. Response is called on the client's reader goroutine in
// the order the stub sent them, so it must not block. r holds a response or
// a per-response error; final marks the request's last call, which may
// carry neither (a flag-only FINAL). When the connection is lost, every
// request that has not had its final call gets one with an error wrapping
// ErrClosed.
type Sink interface {
	Response(index int, r Result, final bool)
}

// route is the state of one batch whose requests may send responses.
type route struct {
	reqs  []*inference.Request
	sink  Sink
	final []bool // guarded by Client.mu
	open  int    // requests without their final call; guarded by Client.mu
}

// Batch is one EXECUTE whose requests may answer through response senders.
// NewBatch registers it before anything is written, so that no response
// can arrive unrouted; Execute sends it; Cancel tells the stub that a
// request's client has gone.
type Batch struct {
	c     *Client
	seq   uint32
	reqs  []*inference.Request
	bufs  [][]byte
	n     int
	route *route
	// The shared memory arenas the batch's large tensors use (arena.go),
	// held from NewBatch until Execute's reply.
	lease lease
	flags uint8
	fds   []int
	// timing is written by NewBatch and Execute, read after Execute.
	timing Timing
	sent   time.Time
	reply  chan frame // set by Send
	begun  bool       // guarded by Client.mu; see Begun
}

// NewBatch encodes reqs and registers the batch. With a nil sink, requests
// that answer through their response sender fail (Execute reports an error
// for them).
func (c *Client) NewBatch(reqs []*inference.Request, sink Sink) (*Batch, error) {
	if len(reqs) == 0 {
		return nil, errors.New("execute: empty batch")
	}
	start := time.Now()
	threshold := int(c.shmThreshold.Load())
	var l lease
	var rt *regionTable
	if threshold > 0 {
		rt = collectRegions(reqs)
		var err error
		if l, err = c.arenas.acquire(largeInputBytes(reqs, threshold, rt != nil)); err != nil {
			// Through the socket, then.
			c.log.Warn("no shared memory arena for large tensors", LogKeyErr, err)
		}
		if rt != nil && l.in != nil {
			rt.base = 1 // after the input arena's descriptor
		}
		l.regions = rt
	}
	bufs, n, used, err := encodeExecuteArena(reqs, threshold, l.in, rt)
	if err != nil {
		c.arenas.release(l, true, 0)
		rt.release(true)
		return nil, fmt.Errorf("execute: %w", err)
	}
	b := &Batch{c: c, seq: c.seq.Add(1), reqs: reqs, bufs: bufs, n: n, lease: l}
	b.timing.Input = time.Since(start)
	if used {
		b.fds = append(b.fds, l.in.fd)
	}
	if rt != nil {
		b.fds = append(b.fds, rt.fds()...)
		b.flags |= flagRegions
	}
	if l.out != nil {
		b.fds = append(b.fds, l.out.fd)
		b.flags |= flagOutRegion
	}
	if threshold > 0 && outputFiles(reqs) {
		b.flags |= flagOutFiles
	}
	if sink != nil {
		b.route = &route{reqs: reqs, sink: sink, final: make([]bool, len(reqs)), open: len(reqs)}
		c.mu.Lock()
		if c.cause != nil {
			c.mu.Unlock()
			c.arenas.abandon(l)
			rt.release(true)
			return nil, fmt.Errorf("execute: %w", c.Err())
		}
		c.routes[b.seq] = b.route
		c.mu.Unlock()
	}
	return b, nil
}

// Execute sends the batch and waits for execute to return; see
// Client.Execute. A Result with Streamed set answers through the Sink. On
// an error for the whole batch no request's responses reach the Sink any
// more, except for the connection-loss call described at Sink.
func (b *Batch) Execute(ctx context.Context) ([]Result, error) {
	if err := b.Send(ctx); err != nil {
		return nil, err
	}
	return b.Wait(ctx, time.Time{})
}

// Send writes the batch to the stub, which runs it once it has answered
// the batches sent before it: its data socket is read in order, one batch
// at a time. ctx bounds the write and is the parent of the BLS calls the
// batch's requests make, until Wait returns. A failed Send needs no Wait.
func (b *Batch) Send(ctx context.Context) error {
	c := b.c
	b.sent = time.Now()
	c.holdUntilReply(b.seq, b.lease.regions)
	ch, err := c.send(ctx, kindExecute, b.seq, b.flags, b.bufs, b.n, b.fds)
	if err != nil {
		return b.failed(err)
	}
	b.reply = ch
	return nil
}

// failed ends a batch whose EXECUTE got no reply.
func (b *Batch) failed(err error) error {
	// The stub may still be reading the inputs or writing outputs:
	// the client regions stay held until its late reply (or the
	// connection's end).
	b.c.arenas.abandon(b.lease)
	// On a timeout the route stays: the caller treats the instance as
	// hung, and the connection's end closes the route.
	return fmt.Errorf("execute: %w", err)
}

// Wait waits for the reply to the batch Send wrote, until ctx ends.
// started is when the stub began the batch, if later than the send (the
// reply to the batch before it came then): the timing's Infer phase counts
// from there.
func (b *Batch) Wait(ctx context.Context, started time.Time) ([]Result, error) {
	c := b.c
	f, err := c.await(ctx, kindExecute, b.seq, b.reply)
	c.forgetParent(b.seq)
	received := time.Now()
	from := b.sent
	if started.After(from) {
		from = started
	}
	b.timing.Infer = received.Sub(from)
	if err != nil {
		return nil, b.failed(err)
	}
	// The stub's own memory files holding outputs are the responses' from
	// here on (replyfiles.go); other descriptors are closed.
	var rf *replyFiles
	if b.flags&flagOutFiles != 0 && f.flags&flagError == 0 {
		rf = newReplyFiles(f.fds)
	} else {
		defer closeFDs(f.fds)
	}
	// After decoding: outputs the stub wrote into a client's room alias the
	// region, which the request's own hold keeps from here on.
	defer c.replyIn(b.seq, f.flags&flagFilesReleased != 0)
	released := f.flags&flagInputsReleased != 0
	if err := replyError(f); err != nil {
		c.arenas.release(b.lease, released, 0)
		b.closeAll()
		return nil, err
	}
	results, large, err := decodeExecuteReplyArena(f.body, 0, f.fds, b.lease, rf, int(c.shmThreshold.Load()), b.reqs)
	rf.finish(err != nil)
	b.timing.Output = time.Since(received)
	c.arenas.release(b.lease, released, large)
	if err != nil {
		b.closeAll()
		return nil, fmt.Errorf("execute: %w", err)
	}
	if b.route == nil {
		for i := range results {
			if results[i].Streamed {
				results[i] = Result{Err: &ModelError{Op: "execute", Code: "INTERNAL",
					Message: "the request was answered through its response sender, which this caller does not take"}}
			}
		}
		return results, nil
	}
	c.mu.Lock()
	for i := range results {
		if !results[i].Streamed {
			b.route.closeLocked(i)
		}
	}
	if b.route.open == 0 && c.routes != nil {
		delete(c.routes, b.seq)
	}
	c.mu.Unlock()
	return results, nil
}

// Timing is how long the batch's phases took; complete once Execute
// returned.
func (b *Batch) Timing() Timing { return b.timing }

// closeAll ends the route: no further response is delivered.
func (b *Batch) closeAll() {
	if b.route == nil {
		return
	}
	c := b.c
	c.mu.Lock()
	if c.routes != nil {
		delete(c.routes, b.seq)
	}
	c.mu.Unlock()
}

func (r *route) closeLocked(i int) {
	if !r.final[i] {
		r.final[i] = true
		r.open--
	}
}

// cancelWriteTimeout bounds the write of a CANCEL frame; the control
// socket only backs up when the stub has stopped reading it, which the
// heartbeat reports.
const cancelWriteTimeout = time.Second

// cancelQueue bounds the CANCEL frames waiting to be written.
const cancelQueue = 1024

// cancelFrame is a CANCEL waiting to be written.
type cancelFrame struct {
	seq   uint32
	index uint32
}

// Cancel tells the stub that request index's client has gone: its
// request.is_cancelled() and sender.is_cancelled() become True. It never
// blocks (a goroutine of the client writes the frame), so it may be called
// from any goroutine, before, during or after Execute, even from a Sink.
func (b *Batch) Cancel(index int) error {
	if index < 0 || index >= len(b.reqs) {
		return fmt.Errorf("cancel: request index %d out of range for a batch of %d", index, len(b.reqs))
	}
	select {
	case b.c.cancels <- cancelFrame{b.seq, uint32(index)}:
		return nil
	case <-b.c.done:
		return fmt.Errorf("cancel: %w", b.c.Err())
	default:
		return errors.New("cancel: too many cancellations waiting to be written")
	}
}

// cancelLoop writes queued CANCEL frames on the control socket until the
// connection ends.
func (c *Client) cancelLoop() {
	defer close(c.cancelDone)
	buf := make([]byte, headerSize+4)
	for {
		select {
		case <-c.done:
			return
		case f := <-c.cancels:
			putHeader(buf, 4, kindCancel, 0, f.seq)
			binary.LittleEndian.PutUint32(buf[headerSize:], f.index)
			ctx, cancel := context.WithTimeout(context.Background(), cancelWriteTimeout)
			err := c.write(ctx, kindCancel, [][]byte{buf}, nil)
			cancel()
			if err != nil {
				c.log.Debug("cannot send a cancellation", LogKeySeq, f.seq, LogKeyErr, err)
			}
		}
	}
}

// onResponse routes a RESPONSE frame to its batch's Sink.
func (c *Client) onResponse(f frame) error {
	if len(f.body) < 8 {
		return fmt.Errorf("response frame (seq %d) of %d bytes has no header", f.seq, len(f.body))
	}
	index := int(binary.LittleEndian.Uint32(f.body))
	final := f.body[4]&responseFinal != 0
	body := f.body[8:]

	c.mu.Lock()
	r := c.routes[f.seq]
	if r == nil || index >= len(r.reqs) || r.final[index] {
		c.mu.Unlock()
		c.dropped.Add(1)
		c.log.Debug("dropped a response nobody waits for", LogKeySeq, f.seq, "index", index)
		return nil
	}
	if final {
		r.closeLocked(index)
		if r.open == 0 {
			delete(c.routes, f.seq)
		}
	}
	c.mu.Unlock()

	var res Result
	if len(body) < 8 {
		return fmt.Errorf("response frame (seq %d) of %d bytes has no meta", f.seq, len(f.body))
	}
	if binary.LittleEndian.Uint32(body[4:]) == 0 {
		if !final {
			return fmt.Errorf("response frame (seq %d, request %d) carries neither a response nor FINAL", f.seq, index)
		}
		r.sink.Response(index, Result{}, true)
		return nil
	}
	results, err := decodeExecuteReply(body, 8, r.reqs[index:index+1])
	if err != nil {
		res = Result{Err: &ModelError{Op: "encode responses", Code: "INTERNAL", Message: "the stub sent an undecodable response: " + err.Error()}}
	} else {
		res = results[0]
		if res.Streamed {
			return fmt.Errorf("response frame (seq %d, request %d) has the streamed status", f.seq, index)
		}
	}
	r.sink.Response(index, res, final)
	return nil
}

// DroppedResponses is the number of responses the stub sent for requests
// that had no Sink or had already had their final call.
func (c *Client) DroppedResponses() int64 { return c.dropped.Load() }

// openEnd is a request that gets its final call when the connection ends.
type openEnd struct {
	sink  Sink
	index int
}

// takeOpenLocked closes every route and returns their open requests.
func takeOpenLocked(routes map[uint32]*route) []openEnd {
	var out []openEnd
	for _, r := range routes {
		for i, done := range r.final {
			if !done {
				r.closeLocked(i)
				out = append(out, openEnd{r.sink, i})
			}
		}
	}
	return out
}

// endOpen gives each open request its final call with err: the connection
// is gone.
func endOpen(open []openEnd, err error) {
	for _, o := range open {
		o.sink.Response(o.index, Result{Err: err}, true)
	}
}
