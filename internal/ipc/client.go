package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/memfile"
)

// Log keys used by the client.
const (
	LogKeyKind = "kind"
	LogKeySeq  = "seq"
	LogKeyErr  = "err"
)

// InitArgs describes the model instance a stub loads. The fields become
// Triton's initialize() args (see the package documentation).
type InitArgs struct {
	ModelFile       string // absolute path of <model>/<version>/model.py
	ModelName       string
	ModelVersion    string
	ModelRepository string // the model's directory, as Triton passes it
	InstanceName    string
	InstanceKind    string // e.g. "CPU", "GPU"
	DeviceID        int
	ModelConfigJSON string // the model configuration as JSON
}

// InitResult is what the stub found in the model.
type InitResult struct {
	HasHealthHook bool
	HookName      string // "is_healthy" or "is_ready"; empty without a hook
}

// Result is the outcome of one request of a batch: a response, or a
// per-request error (a *ModelError).
type Result struct {
	Response *inference.Response
	Err      error
	// Streamed means the request answers through its response sender:
	// its responses, and its FINAL, reach the batch's Sink (see Batch).
	Streamed bool
}

// Client talks to one stub over two connections: the data connection
// carries INIT, EXECUTE and FINALIZE, the control connection PING and
// HEALTH, so that control messages never queue behind a batch and the stub
// runs batches on the thread that reads them. Its methods may be called
// concurrently; replies are matched to callers by sequence id.
type Client struct {
	data, control *link
	log           *slog.Logger
	// shmThreshold is the size from which tensors travel out of band
	// (shm.go); 0 when the data connection cannot pass descriptors.
	shmThreshold atomic.Int64
	arenas       arenas
	// reclaim bounds the bytes of BLS call files waiting for the garbage
	// collector (callfiles.go).
	reclaim *memfile.Reclaimer

	seq     atomic.Uint32
	dropped atomic.Int64 // see DroppedResponses

	handler atomic.Pointer[Handler] // serves the requests the stub starts (call.go)

	mu      sync.Mutex
	pending map[uint32]chan frame // callers waiting for a reply, by seq
	routes  map[uint32]*route     // batches whose requests may send responses, by seq
	cause   error                 // why the connection ended; non-nil once done is closed
	// parents holds the context of each Execute in flight, by seq, for the
	// BLS calls the stub makes under it; calls holds the stub's calls in
	// flight, by the stub's seq.
	parents map[uint32]context.Context
	calls   map[uint32]*Call
	// behind maps an EXECUTE in flight to the batch sent behind it
	// (pipeline.go).
	behind map[uint32]*Batch
	// regionHolds are the client shared memory Holds of batches sent and
	// not yet answered, by seq (regions.go).
	regionHolds map[uint32]*regionTable

	done     chan struct{} // closed when either connection is lost or closed
	shutOnce sync.Once

	stubCalls  StubCalls        // serves LOG and METRIC frames; may be nil
	cancels    chan cancelFrame // CANCEL frames for cancelLoop to write
	cancelDone chan struct{}    // closed when cancelLoop has returned
}

// link is one connection to the stub with its reader goroutine.
type link struct {
	rw  io.ReadWriteCloser
	raw syscall.RawConn // nil when rw has no descriptor (see tryWrite)
	// wsem serializes writes. A channel rather than a mutex so that waiting
	// for it honours the caller's context.
	wsem       chan struct{}
	readerDone chan struct{} // closed when the reader goroutine has returned
	closeOnce  sync.Once
}

// stop ends the link without losing what the stub wrote before the end. A
// socket is shut both ways rather than closed: a write blocked on it fails,
// the stub reads end of stream, and the frames already in its buffer stay
// readable before the reader sees end of stream, so that a reply the stub
// sent just before it exited (FINALIZE's) still reaches its caller. Any
// other connection is closed at once. The reader closes the socket when it
// returns.
func (l *link) stop() error {
	if hc, ok := l.rw.(interface {
		CloseRead() error
		CloseWrite() error
	}); ok && hc.CloseWrite() == nil && hc.CloseRead() == nil {
		return nil
	}
	return l.close()
}

// close closes the connection; only the first call does.
func (l *link) close() error {
	var err error
	l.closeOnce.Do(func() { err = l.rw.Close() })
	return err
}

func newLink(rw io.ReadWriteCloser) *link {
	return &link{rw: rw, raw: rawConnOf(rw), wsem: make(chan struct{}, 1), readerDone: make(chan struct{})}
}

// linkFor routes a message kind to its connection.
func (c *Client) linkFor(k kind) *link {
	if k == kindPing || k == kindHealth || k == kindCancel || k == kindWithdraw {
		return c.control
	}
	return c.data
}

// errClosedByServer is the cause recorded when Close ends the connection.
var errClosedByServer = errors.New("closed by the server")

// NewClient starts a client on the server's ends of the stub's data and
// control socketpairs (from net.FileConn), a reader goroutine for each and
// a writer of cancellations.
// Close stops them. A nil log discards.
func NewClient(data, control io.ReadWriteCloser, log *slog.Logger, opts ...Option) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		data:    newLink(data),
		control: newLink(control),
		log:     log,
		pending: make(map[uint32]chan frame),
		parents: make(map[uint32]context.Context),
		calls:   make(map[uint32]*Call),
		routes:  make(map[uint32]*route),
		done:    make(chan struct{}),

		cancels:    make(chan cancelFrame, cancelQueue),
		cancelDone: make(chan struct{}),
		reclaim:    memfile.NewReclaimer(memfile.DefaultMaxIdle),
	}
	if _, ok := data.(*net.UnixConn); ok {
		c.shmThreshold.Store(DefaultShmThreshold)
	}
	for _, o := range opts {
		o(c)
	}
	go c.readLoop(c.data)
	go c.readLoop(c.control)
	go c.cancelLoop()
	return c
}

// SetShmThreshold sets the tensor size from which tensors travel between
// server and stub in memory files rather than through the socket; 0 sends
// every tensor through the socket. It applies to the stub's outputs from the
// next Init, to inputs at once. It is ignored (stays 0) when the data
// connection is not a Unix socket, which cannot pass descriptors.
func (c *Client) SetShmThreshold(n int) {
	if _, ok := c.data.rw.(*net.UnixConn); ok && n >= 0 {
		c.shmThreshold.Store(int64(n))
	}
}

// Done is closed when the connection is lost or closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection, which makes the stub exit, and waits for the
// reader goroutines and the cancellation writer. Calls in flight return an
// error wrapping ErrClosed, unless their reply had already arrived. It is
// idempotent and always returns nil.
func (c *Client) Close() error {
	c.shutdown(errClosedByServer)
	<-c.data.readerDone
	<-c.control.readerDone
	<-c.cancelDone
	c.arenas.closeAll()
	return nil
}

// Err returns why the connection ended (wrapping ErrClosed), or nil while it
// is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrClosed, c.cause)
}

// Ping sends an empty frame and waits for the echo. The stub's control thread
// answers it even while a batch executes.
func (c *Client) Ping(ctx context.Context) error {
	f, err := c.roundTrip(ctx, kindPing, [][]byte{make([]byte, headerSize)}, 0)
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return replyError(f)
}

// Init loads the model: imports model.py, instantiates TritonPythonModel
// and calls initialize(args). A failure the model reported is a *ModelError
// (Error() "ValueError: ..."; the returned error reads "initialize raised
// ValueError: ...").
func (c *Client) Init(ctx context.Context, a InitArgs) (InitResult, error) {
	msg := wireInit{
		ModelFile:    a.ModelFile,
		ShmThreshold: int(c.shmThreshold.Load()),
		Args: map[string]string{
			"model_config":             a.ModelConfigJSON,
			"model_name":               a.ModelName,
			"model_version":            a.ModelVersion,
			"model_repository":         a.ModelRepository,
			"model_instance_kind":      a.InstanceKind,
			"model_instance_name":      a.InstanceName,
			"model_instance_device_id": strconv.Itoa(a.DeviceID),
		},
	}
	f, err := c.jsonRoundTrip(ctx, kindInit, &msg)
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	if err := replyError(f); err != nil {
		return InitResult{}, err
	}
	var r wireInitReply
	if err := json.Unmarshal(f.body, &r); err != nil {
		return InitResult{}, fmt.Errorf("init: decode reply: %w", err)
	}
	return InitResult(r), nil
}

// Execute runs one batch. It returns one Result per request, in order, or an
// error for the whole batch: a *ModelError (execute raised or returned the
// wrong thing; the error reads "execute raised RuntimeError: ..."), an error
// wrapping ErrClosed, or ctx's error. When ctx ends first, Execute returns at
// once; the stub is still busy and its late reply is dropped. A request that
// answers through its response sender gets an error: callers that take such
// responses use NewBatch with a Sink.
func (c *Client) Execute(ctx context.Context, reqs []*inference.Request) ([]Result, error) {
	b, err := c.NewBatch(reqs, nil)
	if err != nil {
		return nil, err
	}
	return b.Execute(ctx)
}

// CheckHealth calls the model's health hook. ok and detail are the check's
// result ("is_healthy returned False", "is_healthy raised ValueError: x");
// err means the stub could not be asked (connection lost, ctx ended).
func (c *Client) CheckHealth(ctx context.Context) (ok bool, detail string, err error) {
	r, err := c.Health(ctx)
	return r.OK, r.Detail, err
}

// HealthResult is one answer of the model's health hook.
type HealthResult struct {
	OK     bool
	Detail string // why it failed, one line
	// Traceback is the Python traceback when the hook raised.
	Traceback string
}

// Health is CheckHealth with the hook's traceback when it raised.
func (c *Client) Health(ctx context.Context) (HealthResult, error) {
	f, err := c.roundTrip(ctx, kindHealth, [][]byte{make([]byte, headerSize)}, 0)
	if err != nil {
		return HealthResult{}, fmt.Errorf("health: %w", err)
	}
	if err := replyError(f); err != nil {
		return HealthResult{}, fmt.Errorf("health: %w", err)
	}
	var r wireHealthReply
	if err := json.Unmarshal(f.body, &r); err != nil {
		return HealthResult{}, fmt.Errorf("health: decode reply: %w", err)
	}
	return HealthResult{OK: r.OK, Detail: r.Detail, Traceback: r.Traceback}, nil
}

// Finalize asks the stub to call finalize() after any queued batches and to
// exit. A raised exception is a *ModelError ("finalize raised ..."); the
// stub exits either way.
func (c *Client) Finalize(ctx context.Context) error {
	f, err := c.roundTrip(ctx, kindFinalize, [][]byte{make([]byte, headerSize)}, 0)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	return replyError(f)
}

// replyError turns an error reply into a *ModelError, wrapped so that it
// reads "<op> raised <Type>: <message>".
func replyError(f frame) error {
	if f.flags&flagError == 0 {
		return nil
	}
	var w wireError
	if err := json.Unmarshal(f.body, &w); err != nil {
		return fmt.Errorf("%s: decode error reply: %w", f.kind, err)
	}
	return &raisedError{me: w.modelError()}
}

func (c *Client) jsonRoundTrip(ctx context.Context, k kind, v any) (frame, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return frame{}, err
	}
	buf := make([]byte, headerSize, headerSize+len(body))
	return c.roundTrip(ctx, k, [][]byte{append(buf, body...)}, len(body))
}

// roundTrip sends a request frame and waits for its reply. bufs[0] starts
// with headerSize bytes of room for the header; bodyLen counts the bytes
// after it.
func (c *Client) roundTrip(ctx context.Context, k kind, bufs [][]byte, bodyLen int) (frame, error) {
	return c.roundTripSeq(ctx, k, c.seq.Add(1), 0, bufs, bodyLen, nil)
}

// roundTripSeq is roundTrip with a sequence id the caller took from c.seq,
// request flags, and descriptors sent along with the frame (shm.go); the
// caller keeps, and closes, its own copies of them.
func (c *Client) roundTripSeq(ctx context.Context, k kind, seq uint32, flags uint8, bufs [][]byte, bodyLen int, fds []int) (frame, error) {
	ch, err := c.send(ctx, k, seq, flags, bufs, bodyLen, fds)
	if err != nil {
		return frame{}, err
	}
	if k == kindExecute {
		defer c.forgetParent(seq)
	}
	return c.await(ctx, k, seq, ch)
}

// send writes a request frame and registers its caller: the reply comes on
// the returned channel, which await reads. An EXECUTE's ctx is the parent
// of the calls the stub makes under it until await returns. When send
// fails, nothing waits for a reply.
func (c *Client) send(ctx context.Context, k kind, seq uint32, flags uint8, bufs [][]byte, bodyLen int, fds []int) (chan frame, error) {
	if err := ctx.Err(); err != nil {
		c.replyIn(seq, true) // nothing sent: no reply will come
		return nil, err
	}
	// Buffered so that the reader never blocks on a caller that gave up.
	ch := make(chan frame, 1)
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		c.replyIn(seq, true)
		return nil, c.Err()
	}
	c.pending[seq] = ch
	if k == kindExecute {
		c.parents[seq] = ctx
	}
	c.mu.Unlock()

	putHeader(bufs[0], bodyLen, k, flags, seq)
	putFDCount(bufs[0], len(fds))
	if err := c.write(ctx, k, bufs, fds); err != nil {
		c.forget(seq)
		if k == kindExecute {
			c.forgetParent(seq)
		}
		// Nothing went out, or the connection is being shut down: either
		// way no reply will come.
		c.replyIn(seq, true)
		return nil, err
	}
	return ch, nil
}

// await waits for the reply to the frame send wrote, until ctx ends or the
// connection does.
func (c *Client) await(ctx context.Context, k kind, seq uint32, ch chan frame) (frame, error) {
	select {
	case f := <-ch:
		return f, nil
	case <-ctx.Done():
		c.forget(seq)
		select {
		case f := <-ch: // the reply won the race
			return f, nil
		default:
		}
		return frame{}, ctx.Err()
	case <-c.done:
		// The reader drains what the stub sent before the end (see
		// shutdown): the reply may still come.
		select {
		case f := <-ch:
			return f, nil
		case <-c.linkFor(k).readerDone:
		case <-ctx.Done():
		}
		select {
		case f := <-ch:
			return f, nil
		default:
		}
		c.forget(seq)
		return frame{}, c.Err()
	}
}

func (c *Client) forgetParent(seq uint32) {
	c.mu.Lock()
	delete(c.parents, seq)
	c.mu.Unlock()
}

func (c *Client) forget(seq uint32) {
	c.mu.Lock()
	delete(c.pending, seq)
	c.mu.Unlock()
}

type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

// write sends one frame. If ctx ends while the socket is full (the stub
// stopped reading), the write is abandoned through a write deadline; as part
// of a frame may have gone out, the connection is then unusable and is shut
// down.
func (c *Client) write(ctx context.Context, k kind, bufs [][]byte, fds []int) error {
	return c.writeOn(ctx, c.linkFor(k), k, bufs, fds)
}

// writeOn is write on a given connection.
func (c *Client) writeOn(ctx context.Context, l *link, k kind, bufs [][]byte, fds []int) error {
	select {
	case l.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
	defer func() { <-l.wsem }()
	select {
	case <-c.done:
		// The connection ended while this writer waited (select picks
		// among ready cases at random): the socket may not be closed yet,
		// but nothing written to it now reaches the stub.
		return c.Err()
	default:
	}

	// written counts what the non-blocking attempt sent: the stream is
	// no longer intact if a later part fails.
	written := 0
	if len(fds) == 0 && l.raw != nil {
		m, err := tryWrite(l.raw, bufs)
		if err != nil {
			c.shutdown(fmt.Errorf("writing %s frame: %w", k, err))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return c.Err()
		}
		if m == totalLen(bufs) {
			return nil
		}
		bufs, written = skipBytes(bufs, m), m
	}

	var stop func() bool
	var fired chan struct{}
	dl, canDeadline := l.rw.(writeDeadliner)
	if canDeadline && ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			_ = dl.SetWriteDeadline(time.Unix(1, 0))
			close(fired)
		})
	}
	var n int64
	var err error
	if len(fds) > 0 {
		n, err = writeWithFDs(l.rw, bufs, fds)
	} else if len(bufs) == 1 {
		var m int
		m, err = l.rw.Write(bufs[0])
		n = int64(m)
	} else {
		nb := net.Buffers(bufs)
		n, err = nb.WriteTo(l.rw)
	}
	if stop != nil && !stop() {
		// The deadline was (or is being) moved into the past: wait for that
		// and clear it for the next writer.
		<-fired
		_ = dl.SetWriteDeadline(time.Time{})
	}
	if err == nil {
		return nil
	}
	if n == 0 && written == 0 && ctx.Err() != nil {
		return ctx.Err() // nothing went out; the stream is intact
	}
	c.shutdown(fmt.Errorf("writing %s frame: %w", k, err))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return c.Err()
}

// shutdown records why the connection ended, wakes every caller and stops
// both links (link.stop): each reader still takes the frames the stub wrote
// before the end, so that a reply already sent reaches its caller even when
// the other connection's end of stream was seen first (the stub exits after
// answering FINALIZE; both its sockets close at once).
func (c *Client) shutdown(cause error) {
	c.shutOnce.Do(func() {
		c.mu.Lock()
		c.cause = cause
		calls := c.calls
		c.calls = map[uint32]*Call{}
		open := takeOpenLocked(c.routes)
		c.routes = nil
		c.mu.Unlock()
		// Done first: whoever a call's end wakes finds the connection
		// gone, and writes nothing more to it.
		close(c.done)
		for _, call := range calls {
			call.cancel()
		}
		endOpen(open, c.Err())
		c.releaseAllRegions()
		c.log.Debug("stub connection closed", LogKeyErr, cause)
		for _, l := range []*link{c.data, c.control} {
			if err := l.stop(); err != nil {
				c.log.Debug("closing stub connection", LogKeyErr, err)
			}
		}
	})
}

func (c *Client) readLoop(l *link) {
	defer close(l.readerDone)
	defer func() {
		if err := l.close(); err != nil {
			c.log.Debug("closing stub connection", LogKeyErr, err)
		}
	}()
	var src io.Reader = l.rw
	var fds *fdReader
	if uc, ok := l.rw.(*net.UnixConn); ok && l == c.data {
		fds = newFDReader(uc)
		defer fds.closeAll()
		src = fds
	}
	r := bufio.NewReaderSize(src, 64<<10)
	var hdr [headerSize]byte
	for {
		f, err := readFrame(r, &hdr, fds)
		if err != nil {
			c.shutdown(err)
			return
		}
		if len(f.fds) > 0 && f.kind != kindExecute && f.kind != kindBLSInfer {
			// Only execute replies and BLS calls carry tensors.
			closeFDs(f.fds)
			f.fds = nil
		}
		if f.flags&flagReply == 0 {
			// A frame the stub starts: dispatched by kind (dispatch.go).
			if err := c.dispatch(l, f); err != nil {
				err = fmt.Errorf("protocol error: %w", err)
				c.log.Warn("stub protocol error", LogKeyKind, f.kind.String(), LogKeySeq, f.seq, LogKeyErr, err)
				c.shutdown(err)
				return
			}
			continue
		}
		c.mu.Lock()
		if f.kind == kindExecute {
			c.answeredLocked(f.seq)
		}
		ch, ok := c.pending[f.seq]
		if ok {
			delete(c.pending, f.seq)
			// Under mu (ch is buffered, so this never blocks): a caller
			// that forgets its seq then finds the frame in ch or never
			// gets it, and a dropped frame's descriptors are closed here.
			ch <- f
		}
		c.mu.Unlock()
		if !ok {
			// The caller gave up (its context ended); the reply is late.
			c.log.Debug("dropped late stub reply", LogKeyKind, f.kind.String(), LogKeySeq, f.seq)
			closeFDs(f.fds)
			c.replyIn(f.seq, f.flags&flagFilesReleased != 0)
		}
	}
}

// Timing splits one execute into Triton's three compute phases: Input is
// encoding the batch's inputs, Infer the round trip to the stub (its
// execute), Output decoding the replies into outputs.
type Timing struct {
	Input, Infer, Output time.Duration
}
