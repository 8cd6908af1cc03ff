"""Framing of the stub protocol (see internal/ipc/doc.go).

Every frame is a 12-byte little-endian header followed by a body:

    uint32 body length | uint8 kind | uint8 flags | uint16 reserved | uint32 seq
"""

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
KIND_RESPONSE = 6  # stub -> server: one response sent through a response sender
KIND_CANCEL = 7  # server -> stub (control socket): a request's client has gone

FLAG_REPLY = 0x01
FLAG_ERROR = 0x02

# Bodies up to this size are joined and sent with one sendall; bigger ones
# are sent part by part so that large tensors are not copied again.
_JOIN_LIMIT = 1 << 20


def _nbytes(part):
    return part.nbytes if isinstance(part, memoryview) else len(part)


class Conn:
    """One end of the stub socket: a buffered reader and a locked writer."""

    def __init__(self, sock):
        self._sock = sock
        self._rfile = sock.makefile("rb", buffering=1 << 16)
        self._wlock = threading.Lock()

    def read_frame(self):
        """Return (kind, flags, seq, body) or None at end of stream."""
        hdr = self._rfile.read(HEADER_SIZE)
        if len(hdr) < HEADER_SIZE:
            return None
        n, kind, flags, _, seq = HEADER.unpack(hdr)
        body = bytearray(n)
        if n:
            view = memoryview(body)
            got = 0
            while got < n:
                k = self._rfile.readinto(view[got:])
                if not k:
                    return None
                got += k
        return kind, flags, seq, body

    def send(self, kind, flags, seq, parts=()):
        """Send one frame; parts are bytes-like objects forming the body.

        Returns False when the peer is gone, so that callers on worker
        threads can give up quietly: the reading threads see the same end of
        stream and stops the stub.
        """
        size = 0
        for p in parts:
            size += _nbytes(p)
        hdr = HEADER.pack(size, kind, flags, 0, seq)
        try:
            with self._wlock:
                if size <= _JOIN_LIMIT:
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
        return True
