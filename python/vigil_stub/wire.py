"""Framing of the stub protocol (see internal/ipc/doc.go).

Every frame is a 12-byte little-endian header followed by a body:

    uint32 body length | uint8 kind | uint8 flags | uint16 descriptors | uint32 seq

"descriptors" counts the file descriptors sent with the frame (SCM_RIGHTS,
with its first byte): memory files holding large tensors (tensors.py).
"""

import array
import collections
import os
import socket
import struct
import sys
import threading

HEADER = struct.Struct("<IBBHI")
HEADER_SIZE = HEADER.size
U32 = struct.Struct("<I")

KIND_INIT = 1
KIND_EXECUTE = 2
KIND_PING = 3
KIND_HEALTH = 4
KIND_FINALIZE = 5
# Frames the stub starts, on the control socket.
KIND_LOG = 12
KIND_METRIC = 13
KIND_RESPONSE = 6  # stub -> server: one response sent through a response sender
KIND_CANCEL = 7  # server -> stub (control socket): a request's client has gone
KIND_WITHDRAW = 14  # server -> stub (control socket): do not run an EXECUTE not begun
# Frames the stub starts (calls.py): a BLS request, the server's responses
# to it, its cancellation, and model control.
KIND_BLS_INFER = 8
KIND_BLS_RESPONSE = 9
KIND_BLS_CANCEL = 10
KIND_MODEL_CONTROL = 11

FLAG_REPLY = 0x01
FLAG_ERROR = 0x02
# EXECUTE request: the frame's last descriptor is an output arena lent for
# the batch's large outputs (internal/ipc/arena.go).
FLAG_OUT_REGION = 0x04
# EXECUTE reply: the stub holds no view of the batch's input arena.
FLAG_INPUTS_RELEASED = 0x04
# EXECUTE reply: no array over the batch's reused memory files (region
# access 2, internal/ipc/regions.go) outlived the batch.
FLAG_FILES_RELEASED = 0x08
# EXECUTE request: the frame passes a client's shared memory regions; its
# meta starts with the region table (internal/ipc/regions.go).
FLAG_REGIONS = 0x08
# EXECUTE request: every request takes its large outputs in memory files
# (internal/ipc/replyfiles.go): the stub may send one of its own per
# response with the reply.
FLAG_OUT_FILES = 0x10

# Bodies up to this size are joined and sent with one sendall; bigger ones
# are sent part by part so that large tensors are not copied again.
_JOIN_LIMIT = 1 << 20


# Room for the descriptors of one message (the kernel's limit is 253).
_ANC_SPACE = socket.CMSG_SPACE(253 * array.array("i").itemsize)
# Plain ints: the socket module's constants are enum.IntFlag members, whose
# operators run Python code on every frame.
_CLOEXEC = int(socket.MSG_CMSG_CLOEXEC)
_CTRUNC = int(socket.MSG_CTRUNC)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)


class FrameBody(bytearray):
    """A frame body that came with descriptors: fds, in the order sent, and
    out_region, the output arena an EXECUTE lent (or None); regions says
    whether an EXECUTE passes client regions. The frame's consumer closes
    the descriptors."""

    __slots__ = ("fds", "out_region", "regions")


# The buffer a connection receives into: a header and the small bodies
# that follow it arrive with one recv.
_READ_BUFFER = 1 << 16


class _Reader:
    """Reads frames from a socket through one reused buffer: a frame that
    arrived whole costs one recv, and its body is copied out of the buffer
    once; a body larger than what arrived is received straight into its own
    bytearray.

    With descriptors, it reads with recvmsg and keeps the descriptors that
    arrive until frames claim them: the kernel delivers a message's
    descriptors with its first byte, so they are here once the frame's
    header has been read. One thread at a time may read."""

    def __init__(self, sock, pass_fds):
        self._sock = sock
        self._buf = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0  # the unread bytes are _buf[_start:_end]
        self._end = 0
        self.fds = collections.deque() if pass_fds else None

    def _recv(self, view):
        if self.fds is None:
            return self._sock.recv_into(view)
        n, anc, flags, _ = self._sock.recvmsg_into([view], _ANC_SPACE, _CLOEXEC)
        for level, typ, data in anc:
            if level == _SOL_SOCKET and typ == _SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                self.fds.extend(fds)
        if flags & _CTRUNC:
            raise OSError("descriptors sent with a frame were truncated")
        return n

    def read_frame(self):
        """Return (kind, flags, seq, body) or None at end of stream."""
        buf, view = self._buf, self._view
        start, end = self._start, self._end
        if end - start < HEADER_SIZE:
            if start:
                # What came of the header moves to the front, so that the
                # rest has room behind it.
                buf[:end - start] = view[start:end]
                end -= start
                start = 0
            while end < HEADER_SIZE:
                k = self._recv(view[end:])
                if not k:
                    self._start = self._end = 0
                    return None
                end += k
        n, kind, flags, nfds, seq = HEADER.unpack_from(buf, start)
        start += HEADER_SIZE
        have = end - start
        if nfds:
            queued = self.fds if self.fds is not None else ()
            if nfds > len(queued):
                raise OSError("frame says %d descriptors came with it, %d arrived" % (nfds, len(queued)))
            cls = FrameBody
        else:
            cls = bytearray
        if n <= have:
            body = cls(view[start:start + n])
            start += n
            if start == end:
                start = end = 0
            self._start, self._end = start, end
        else:
            body = cls(n)
            body[:have] = view[start:end]
            self._start = self._end = 0
            got, bview = have, memoryview(body)
            while got < n:
                k = self._recv(bview[got:])
                if not k:
                    return None
                got += k
            del bview  # the model may resize the body; no export may pin it
        if nfds:
            body.fds = [queued.popleft() for _ in range(nfds)]
            body.out_region = body.fds.pop() if kind == KIND_EXECUTE and flags & FLAG_OUT_REGION else None
            body.regions = kind == KIND_EXECUTE and bool(flags & FLAG_REGIONS)
        return kind, flags, seq, body


class Conn:
    """One end of the stub socket: a buffered reader and a locked writer.

    With pass_fds, frames may carry descriptors both ways (read_frame returns
    a FrameBody then, send takes fds)."""

    def __init__(self, sock, pass_fds=False):
        self._sock = sock
        self._reader = _Reader(sock, pass_fds)
        # read_frame() returns (kind, flags, seq, body), or None at end of
        # stream (_Reader.read_frame, bound once: it runs for every frame).
        self.read_frame = self._reader.read_frame
        self._wlock = threading.Lock()

    @property
    def passes_fds(self):
        return self._reader.fds is not None

    def send(self, kind, flags, seq, parts=(), fds=()):
        """Send one frame; parts are bytes-like objects forming the body, fds
        descriptors to pass with it (closed here once sent, or not).

        Returns False when the peer is gone, so that callers on worker
        threads can give up quietly: the reading threads see the same end of
        stream and stops the stub.
        """
        size = 0
        for p in parts:
            size += p.nbytes if type(p) is memoryview else len(p)
        hdr = HEADER.pack(size, kind, flags, len(fds), seq)
        try:
            with self._wlock:
                if fds:
                    sent = self._sock.sendmsg([hdr], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                    if sent < HEADER_SIZE:
                        self._sock.sendall(hdr[sent:])
                    for p in parts:
                        self._sock.sendall(p)
                elif size <= _JOIN_LIMIT:
                    self._sock.sendall(b"".join((hdr, *parts)) if parts else hdr)
                else:
                    self._sock.sendall(hdr)
                    for p in parts:
                        self._sock.sendall(p)
        except OSError as e:
            print("vigil_stub: cannot write to the server: %s" % e, file=sys.stderr)
            try:
                self._sock.shutdown(2)
            except OSError:
                pass
            return False
        finally:
            for fd in fds:
                os.close(fd)
        return True


# The data socket carries both the server's requests (INIT, EXECUTE,
# FINALIZE) and the server's answers to the stub's own requests
# (BLS_RESPONSE, MODEL_CONTROL replies). One thread at a time reads it, the
# one that needs a frame next: the main thread between batches, or a thread
# waiting for the answer to its call while execute runs. The reader keeps
# frames meant for other threads and wakes them, so a frame whose reader is
# also its consumer (the common case) crosses no thread.
class Demux:
    """Reads the data socket for whichever thread needs a frame next.

    The lock is taken twice per frame on the path where the reader is the
    consumer, and waiters are woken only when there are any: the main
    thread's loop pays for the demultiplexing only when BLS calls wait."""

    def __init__(self, conn):
        self._conn = conn
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._waiters = 0  # threads in cv.wait
        self._reading = False
        self._closed = False
        self._requests = collections.deque()
        self._replies = {}  # the stub's seq -> deque of reply frames

    def next_request(self):
        """The next frame the server started, or None at end of stream."""
        return self._pump(self._requests)

    def expect(self, seq):
        """Collect replies to seq from now on (call before sending)."""
        with self._lock:
            self._replies[seq] = collections.deque()

    def next_reply(self, seq):
        """The next reply to seq, or None once the connection has ended."""
        return self._pump(self._replies[seq])

    def forget(self, seq):
        with self._lock:
            self._replies.pop(seq, None)

    def _pump(self, q):
        """The next frame of q: queued already, read by another thread, or
        read here (frames for other threads are queued for them)."""
        lock = self._lock
        with lock:
            while True:
                if q:
                    return q.popleft()
                if self._closed:
                    return None
                if not self._reading:
                    self._reading = True
                    break
                self._waiters += 1
                try:
                    self._cv.wait()
                finally:
                    self._waiters -= 1
        reading = True
        try:
            read = self._conn.read_frame
            while True:
                frame = read()
                with lock:
                    if frame is None:
                        self._closed = True
                        return None
                    if frame[1] & FLAG_REPLY:
                        rq = self._replies.get(frame[2])
                        if rq is not None:  # else: a late reply nobody waits for
                            rq.append(frame)
                    else:
                        self._requests.append(frame)
                    if q:
                        self._reading = reading = False
                        if self._waiters:
                            self._cv.notify_all()
                        return q.popleft()
                    if self._waiters:
                        self._cv.notify_all()
        except OSError:
            with lock:
                self._closed = True
            raise
        finally:
            if reading:
                with lock:
                    self._reading = False
                    if self._waiters:
                        self._cv.notify_all()
