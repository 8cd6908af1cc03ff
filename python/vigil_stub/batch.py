"""Response senders: the state of one EXECUTE's requests after they reach
the model (see internal/ipc/stream.go).

A Batch holds, per request, how many responses went out, whether FINAL did
(the sender is closed) and whether the server cancelled it. Requests point
to their batch, so that request.is_cancelled(), get_response_sender() and
the sender work from any thread, during execute and after it returned. A
RESPONSE frame carries one response or a flag-only FINAL:

    u32 request index | u8 flags (1 FINAL) | 3 bytes zero | u32 meta length | meta | data

with the meta of an EXECUTE reply for zero or one responses.
"""

import struct
import sys
import threading

from .wire import KIND_RESPONSE, U32

_PREFIX = struct.Struct("<IB3x")
_EMPTY = (U32.pack(4), U32.pack(0))


def _pb():
    # Imported by then: requests exist only once numpy and the module are.
    return sys.modules["triton_python_backend_utils"]


class Batch:
    """One EXECUTE's requests, from decoding until each has its FINAL."""

    __slots__ = ("seq", "decoupled", "_requests", "_conn", "_codec", "_registry", "_lock",
                 "_sent", "_closed", "_cancelled", "_open")

    def __init__(self, seq, requests, decoupled, conn, codec, registry):
        n = len(requests)
        self.seq = seq
        self.decoupled = decoupled
        self._requests = requests
        self._conn = conn
        self._codec = codec
        self._registry = registry
        self._lock = threading.Lock()
        self._sent = [0] * n
        self._closed = [False] * n
        # Written by the control thread; a list element store is atomic.
        self._cancelled = [False] * n
        self._open = n
        for i, r in enumerate(requests):
            r._batch = self
            r._index = i

    # --- cancellation (control thread) -----------------------------------

    def cancel(self, index):
        if 0 <= index < len(self._cancelled):
            self._cancelled[index] = True

    def is_cancelled(self, index):
        return self._cancelled[index]

    # --- senders (any thread) --------------------------------------------

    def send(self, index, response, final):
        """InferenceResponseSender.send after its argument checks."""
        with self._lock:
            if not self.decoupled:
                if response is not None and self._sent[index]:
                    raise _pb().TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send more than one response.")
                if response is None and not self._sent[index]:
                    raise _pb().TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send complete final "
                        "before sending a response.")
            if self._closed[index]:
                raise _pb().TritonModelException("Unable to send response. Response sender has been closed.")
            if not self._write(index, response, final):
                raise _pb().TritonModelException("An error occurred while sending a response.")
            if response is not None:
                self._sent[index] += 1
            if final:
                self._close_locked(index)

    def _write(self, index, response, final):
        prefix = _PREFIX.pack(index, 1 if final else 0)
        if response is None:
            parts = (prefix, *_EMPTY)
        else:
            # The reply body sits after the prefix (the data's alignment counts from the frame body).
            parts = (prefix, *self._codec.encode_responses([response], [self._requests[index]], base=_PREFIX.size))
        return self._conn.send(KIND_RESPONSE, 0, self.seq, parts)

    def _close_locked(self, index):
        if not self._closed[index]:
            self._closed[index] = True
            self._open -= 1
            if self._open == 0:
                self._registry.release(self)
                # Requests point back at their batch: without this the
                # cycle would keep their input arrays (views of the shared
                # memory arena) alive until the next garbage collection.
                self._requests = ()

    # --- the runtime, once execute has returned ---------------------------

    def sent(self, index):
        with self._lock:
            return self._sent[index]

    def is_closed(self, index):
        with self._lock:
            return self._closed[index]

    def answered(self, index):
        """The request is answered by execute's return value (or by an error
        reply): its sender is closed without sending anything."""
        with self._lock:
            self._close_locked(index)

    def close_all(self):
        """Close every sender: the whole batch failed, or execute's return
        value answers every request."""
        with self._lock:
            if self._open:
                self._closed = [True] * len(self._closed)
                self._open = 0
                self._registry.release(self)
                self._requests = ()  # see _close_locked

    def fail_open(self, message):
        """Send an error as the FINAL response of every request whose sender
        is still open (a coroutine execute raised after execute returned)."""
        with self._lock:
            for i in range(len(self._closed)):
                if not self._closed[i]:
                    pb = _pb()
                    self._write(i, pb.InferenceResponse(error=pb.TritonError(message)), True)
                    self._close_locked(i)


class Registry:
    """The batches whose requests are still open, by sequence id, so that a
    CANCEL finds its request. A CANCEL may overtake its EXECUTE (they travel
    on different sockets); it is then kept until the EXECUTE arrives.
    EXECUTE sequence ids grow, so a CANCEL for an older one whose batch is
    gone is for a finished request and is dropped."""

    def __init__(self):
        self._lock = threading.Lock()
        self._batches = {}
        self._early = {}  # seq -> request indexes cancelled before the EXECUTE arrived
        self._last = 0

    def add(self, batch):
        with self._lock:
            self._batches[batch.seq] = batch
            self._last = batch.seq
            early = self._early.pop(batch.seq, None) if self._early else None
            if self._early:
                # A CANCEL for a sequence id that was skipped will never match.
                self._early = {s: v for s, v in self._early.items() if s > batch.seq}
        if early:
            for i in early:
                batch.cancel(i)

    def release(self, batch):
        with self._lock:
            if self._batches.get(batch.seq) is batch:
                del self._batches[batch.seq]

    def cancel(self, seq, index):
        with self._lock:
            batch = self._batches.get(seq)
            if batch is None:
                if seq > self._last:
                    self._early.setdefault(seq, []).append(index)
                return
        batch.cancel(index)

    def __len__(self):
        with self._lock:
            return len(self._batches)
