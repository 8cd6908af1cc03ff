"""Requests the stub makes of the server: BLS calls and model control
(see internal/ipc/call.go for the frames). Their answers come back on the
data socket, read through wire.Demux.
"""

import contextvars
import itertools
import json
import struct
import threading
from math import prod

import numpy as np

import triton_python_backend_utils as pb

from . import tensors
from .wire import FLAG_ERROR, KIND_BLS_CANCEL, KIND_BLS_INFER, KIND_MODEL_CONTROL, U32

_U32X4 = struct.Struct("<IIII")
_CALL_FINAL = 0x01
_CALL_TAIL = struct.Struct("<QIB")  # timeout µs, parent EXECUTE seq, decoupled
_U32_FROM = U32.unpack_from
_RESPONSE_HEAD_FROM = tensors._RESPONSE_HEAD.unpack_from
_TENSOR_HEAD_FROM = tensors._TENSOR_HEAD.unpack_from
_tail = tensors._tail
_DATATYPES = tensors._DATATYPES


class Calls:
    """BLS calls and model control for one stub (pb_utils talks to it)."""

    def __init__(self, conn, demux, codec):
        self._conn = conn
        self._demux = demux
        self._codec = codec
        self._seqs = itertools.count(1)
        self._seq_lock = threading.Lock()
        # The EXECUTE a call is made under: set on the thread (and in the
        # coroutines) running execute; _executing is the fallback for
        # threads the model started.
        self._parent = contextvars.ContextVar("vigil_parent", default=0)
        self._executing = []
        self.live = False  # initialize returned and finalize has not begun

    # --- execute bookkeeping (runtime) -----------------------------------

    def enter(self, seq):
        self._executing.append(seq)
        return self._parent.set(seq)

    def leave(self, seq, token):
        self._parent.reset(token)
        try:
            self._executing.remove(seq)
        except ValueError:
            pass

    def parent(self):
        p = self._parent.get()
        if p:
            return p
        ex = self._executing
        return ex[0] if len(ex) == 1 else 0

    def adopt(self, parent):
        """Mark the current context (a coroutine) as running under parent."""
        self._parent.set(parent)

    def _next_seq(self):
        with self._seq_lock:
            return next(self._seqs) & 0xFFFFFFFF or next(self._seqs)

    # --- BLS -------------------------------------------------------------

    def infer(self, request, parent=None, decoupled=False):
        """Send request (a pb.InferenceRequest) and return its response, or
        with decoupled a ResponseIterator over its responses."""
        if not self.live:
            raise pb.TritonModelException("BLS is only supported during the 'execute' function.")
        if parent is None:
            parent = self.parent()
        model = request._model_name.encode()
        version = b"" if request._model_version in (-1, None) else str(request._model_version).encode()
        header = b"".join((U32.pack(len(model)), model, U32.pack(len(version)), version,
                           _CALL_TAIL.pack(request._timeout, parent, 1 if decoupled else 0)))
        parts = [U32.pack(len(header)), header]
        parts.extend(self._encode_request(request))
        seq = self._next_seq()
        demux = self._demux
        demux.expect(seq)
        if decoupled:
            if not self._conn.send(KIND_BLS_INFER, 0, seq, parts):
                demux.forget(seq)
                return ResponseIterator(self, seq, closed=True)
            return ResponseIterator(self, seq)
        try:
            if not self._conn.send(KIND_BLS_INFER, 0, seq, parts):
                return _error_response("the connection to the server is closed", pb.TritonError.UNAVAILABLE)
            frame = demux.next_reply(seq)
        finally:
            demux.forget(seq)
        if frame is None:
            return _error_response("the connection to the server closed during the call", pb.TritonError.UNAVAILABLE)
        return self._decode_response(frame[3])[0]

    def _cancel(self, seq):
        self._conn.send(KIND_BLS_CANCEL, 0, seq)

    def _encode_request(self, request):
        """EXECUTE request body parts for one request (internal/ipc/codec.go)."""
        rid = str(request._request_id).encode()
        params = request._wire_parameters()
        params = json.dumps(params).encode() if params else b""
        outs = [n.encode() for n in request._requested_output_names]
        meta = [U32.pack(1), _U32X4.pack(len(rid), len(params), len(request._inputs), len(outs)), rid, params]
        blobs = []
        encode = self._codec._encode_tensor
        for t in request._inputs:
            code, shape, data = encode(t)
            name = t.name().encode()
            ndim = len(shape)
            nbytes = data.nbytes if isinstance(data, memoryview) else len(data)
            meta.append(tensors._TENSOR_HEAD.pack(len(name), code, ndim) + name + tensors._tail(ndim).pack(*shape, nbytes))
            blobs.append(data)
        for n in outs:
            meta.append(U32.pack(len(n)) + n)
        corr = request._correlation_id
        if isinstance(corr, str):
            c = corr.encode()
            meta.append(tensors._SEQUENCE.pack(request._flags, 2 if c else 0, 0, len(c)) + c)
        else:
            meta.append(tensors._SEQUENCE.pack(request._flags, 1 if corr else 0, corr, 0))
        meta = b"".join(meta)
        return [U32.pack(len(meta)), meta, *blobs]

    def _decode_response(self, body):
        """A BLS_RESPONSE body as (pb.InferenceResponse, final); a flag-only
        final is an empty response, as Triton yields it."""
        (flags, mlen) = struct.unpack_from("<II", body, 0)
        final = bool(flags & _CALL_FINAL)
        return self._decode_entry(body, mlen), final

    def _decode_entry(self, body, mlen):
        p = 8
        data = 8 + mlen
        end = len(body)
        (n,) = _U32_FROM(body, p)
        p += 4
        if n == 0:
            return pb.InferenceResponse._wrap([])
        status, a, b = _RESPONSE_HEAD_FROM(body, p)
        p += 9
        if status != 0:
            msg = body[p:p + a].decode(errors="replace")
            code = body[p + a:p + a + b].decode()
            return _error_response(msg, _CODES.get(code, pb.TritonError.INTERNAL))
        params = json.loads(body[p:p + a].decode()) if a else None
        p += a
        numpy_types = self._codec._numpy
        wrap = pb.Tensor._wrap
        outputs = []
        for _ in range(b):
            name_len, code, ndim = _TENSOR_HEAD_FROM(body, p)
            p += 6
            name = body[p:p + name_len].decode()
            p += name_len
            tail = _tail(ndim)
            *shape, nbytes = tail.unpack_from(body, p)
            p += tail.size
            if nbytes > end - data:
                raise pb.TritonModelException("BLS response: output %r declares %d bytes, %d remain" % (
                    name, nbytes, end - data))
            if code == 13:
                arr = pb._deserialize_bytes(memoryview(body)[data:data + nbytes]).reshape(shape)
            else:
                dt = numpy_types[code] if 0 < code < len(numpy_types) else None
                if dt is None:
                    dt = numpy_types[14] = tensors._bf16_dtype()
                count = nbytes // dt.itemsize
                if prod(shape) == count:
                    # One array of its shape over the frame (tensors.py).
                    arr = np.ndarray(shape, dt, body, data)
                else:
                    arr = np.frombuffer(body, dtype=dt, count=count, offset=data).reshape(shape)
            data += nbytes
            outputs.append(wrap(name, arr, _DATATYPES[code]))
        return pb.InferenceResponse._wrap(outputs, None, params)

    # --- model control ---------------------------------------------------

    def control(self, op, **fields):
        """Send a MODEL_CONTROL request; returns the reply object or raises
        pb.TritonModelException with the server's message."""
        fields["op"] = op
        body = json.dumps(fields).encode()
        seq = self._next_seq()
        demux = self._demux
        demux.expect(seq)
        try:
            if not self._conn.send(KIND_MODEL_CONTROL, 0, seq, (body,)):
                raise pb.TritonModelException("the connection to the server is closed")
            frame = demux.next_reply(seq)
        finally:
            demux.forget(seq)
        if frame is None:
            raise pb.TritonModelException("the connection to the server closed during the request")
        reply = json.loads(bytes(frame[3]) or b"{}")
        if frame[1] & FLAG_ERROR:
            raise pb.TritonModelException(reply.get("message", "model control failed"))
        return reply


class ResponseIterator:
    """The responses of a call made with exec(decoupled=True), in order.

    Iterating blocks (without the GIL) until the next response arrives and
    stops after the last; a callee that ends with a flag-only final yields
    an empty response last, as in Triton. Once finished, iterating again
    replays the responses from the start. cancel() asks the server to
    cancel the call if it has not finished.
    """

    def __init__(self, calls, seq, closed=False):
        self._calls = calls
        self._seq = seq
        self._seen = []
        self._pos = 0
        self._done = False
        if closed:
            self._finish(_error_response("the connection to the server is closed", pb.TritonError.UNAVAILABLE))

    def __iter__(self):
        if self._done:
            self._pos = 0
        return self

    def __next__(self):
        if self._pos < len(self._seen):
            self._pos += 1
            return self._seen[self._pos - 1]
        if self._done:
            raise StopIteration
        frame = self._calls._demux.next_reply(self._seq)
        if frame is None:
            resp, final = _error_response("the connection to the server closed during the call",
                                          pb.TritonError.UNAVAILABLE), True
        else:
            resp, final = self._calls._decode_response(frame[3])
        if final:
            self._finish(resp)
        else:
            self._seen.append(resp)
        self._pos += 1
        return resp

    def _finish(self, resp):
        self._seen.append(resp)
        self._done = True
        self._calls._demux.forget(self._seq)

    def cancel(self):
        """Ask the server to cancel the call; its remaining responses may
        still arrive (ending with a CANCELLED error or the callee's last)."""
        if not self._done:
            self._calls._cancel(self._seq)

    def __del__(self):
        if not self._done:
            # Unread responses are dropped from here on.
            self._calls._demux.forget(self._seq)


_CODES = {name: code for code, name in pb.TritonError._NAMES.items()}


def _error_response(msg, code):
    return pb.InferenceResponse(error=pb.TritonError(msg, code))
