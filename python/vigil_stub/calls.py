"""Requests the stub makes of the server: BLS calls and model control
(see internal/ipc/call.go for the frames). Their answers come back on the
data socket, read through wire.Demux.
"""

import contextvars
import itertools
import json
import mmap
import os
import struct
import threading
from math import prod

import numpy as np

import triton_python_backend_utils as pb

from . import tensors
from .wire import FLAG_ERROR, KIND_BLS_CANCEL, KIND_BLS_INFER, KIND_MODEL_CONTROL, U32

_U32X4 = struct.Struct("<IIII")
_U32X2_FROM = struct.Struct("<II").unpack_from
_ONE = U32.pack(1)
_LAYOUT_CACHE = 64
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
        # A model calls the same few models with the same few layouts, call
        # after call: the bytes that depend only on the layout are built
        # once (bounded, like the codec's record cache).
        self._call_heads = {}  # (model, version) -> header's model and version fields
        self._request_metas = {}  # input layout, outputs, sequence -> the meta after params
        self._response_plans = {}  # a BLS_RESPONSE's meta bytes -> its decoded outputs' layout

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
        key = (request._model_name, request._model_version)
        head = self._call_heads.get(key)
        if head is None:
            model = request._model_name.encode()
            version = b"" if request._model_version in (-1, None) else str(request._model_version).encode()
            head = b"".join((U32.pack(len(model) + len(version) + 8 + _CALL_TAIL.size),
                             U32.pack(len(model)), model, U32.pack(len(version)), version))
            if len(self._call_heads) < _LAYOUT_CACHE:
                self._call_heads[key] = head
        parts = [head, _CALL_TAIL.pack(request._timeout, parent, 1 if decoupled else 0)]
        body, fds = self._encode_request(request, len(head) + _CALL_TAIL.size)
        parts.extend(body)
        seq = self._next_seq()
        demux = self._demux
        demux.expect(seq)
        if decoupled:
            if not self._conn.send(KIND_BLS_INFER, 0, seq, parts, fds):  # send closes fds
                demux.forget(seq)
                return ResponseIterator(self, seq, closed=True)
            return ResponseIterator(self, seq)
        try:
            if not self._conn.send(KIND_BLS_INFER, 0, seq, parts, fds):
                return _error_response("the connection to the server is closed", pb.TritonError.UNAVAILABLE)
            frame = demux.next_reply(seq)
        finally:
            demux.forget(seq)
        if frame is None:
            return _error_response("the connection to the server closed during the call", pb.TritonError.UNAVAILABLE)
        return self._decode_response(frame[3])[0]

    def _cancel(self, seq):
        self._conn.send(KIND_BLS_CANCEL, 0, seq)

    def _encode_request(self, request, base):
        """EXECUTE request body parts for one request (internal/ipc/codec.go)
        at offset base of the frame body, and the descriptors to send with
        them: inputs of at least the
        codec's shm_threshold bytes go out of band, in one sealed memory
        file for the call (descriptor 0), when the connection passes
        descriptors (internal/ipc/callfiles.go)."""
        rid = request._request_id
        rid = str(rid).encode() if rid else b""
        params = request._parameters
        if params:
            params = request._wire_parameters()
            params = json.dumps(params).encode() if params else b""
        else:
            params = b""
        encode = self._codec._encode_tensor
        big = self._codec.shm_threshold if self._conn.passes_fds else 0
        blobs = []
        rel = 0  # in-band data bytes so far, from the data section's aligned start
        layout = []
        large = []  # (offset in the call's file, data)
        off = 0
        for t in request._inputs:
            code, shape, data = encode(t)
            nbytes = data.nbytes if isinstance(data, memoryview) else len(data)
            if big > 0 and nbytes >= big:
                layout.append((t._name, code, shape, nbytes, off))
                large.append((off, data))
                off += (nbytes + 63) & ~63
                continue
            if nbytes:
                if rel & 15:
                    blobs.append(tensors._PADS[-rel & 15])
                    rel += -rel & 15
                blobs.append(data)
                rel += nbytes
            layout.append((t._name, code, shape, nbytes, None))
        fds = [self._call_file(large, off)] if large else []
        outs = request._requested_output_names
        key = (tuple(layout), tuple(outs), request._correlation_id, request._flags)
        rest = self._request_metas.get(key)
        if rest is None:
            rest = self._request_rest(layout, outs, request._correlation_id, request._flags)
            if len(self._request_metas) < _LAYOUT_CACHE:
                self._request_metas[key] = rest
        head = _U32X4.pack(len(rid), len(params), len(layout), len(outs))
        mlen = len(head) + len(rid) + len(params) + len(rest) + 4
        if not blobs:
            return [U32.pack(mlen), _ONE, head, rid, params, rest], fds
        return [U32.pack(mlen), _ONE, head, rid, params, rest, tensors._PADS[-(base + 4 + mlen) & 15], *blobs], fds

    @staticmethod
    def _call_file(large, size):
        """A sealed memory file of size bytes holding large's (offset, data)."""
        return tensors.sealed_file("vigil-bls", large, size)

    @staticmethod
    def _request_rest(layout, outs, corr, flags):
        """The part of a request's meta after its parameters: tensor
        records, requested outputs, sequence record."""
        meta = []
        for name, code, shape, nbytes, off in layout:
            name = name.encode()
            ndim = len(shape)
            if off is None:
                meta.append(tensors._TENSOR_HEAD.pack(len(name), code, ndim) + name + tensors._tail(ndim).pack(*shape, nbytes))
                continue
            meta.append(tensors._TENSOR_HEAD.pack(len(name), code | tensors._OUT_OF_BAND, ndim) + name
                        + tensors._tail(ndim).pack(*shape, nbytes) + tensors._LOCATION.pack(0, off))
        for n in outs:
            n = n.encode()
            meta.append(U32.pack(len(n)) + n)
        if isinstance(corr, str):
            c = corr.encode()
            meta.append(tensors._SEQUENCE.pack(flags, 2 if c else 0, 0, len(c)) + c)
        else:
            meta.append(tensors._SEQUENCE.pack(flags, 1 if corr else 0, corr, 0))
        return b"".join(meta)

    def _decode_response(self, body):
        """A BLS_RESPONSE body as (pb.InferenceResponse, final); a flag-only
        final is an empty response, as Triton yields it.

        Outputs out of band are in memory files that came with the frame
        (the callee stub's, or the caller's own input file for an output
        that is a view of an input; internal/ipc/replyfiles.go): the model
        gets read-only numpy views of a read-only mapping, and the file is
        freed once its arrays are gone."""
        fds = getattr(body, "fds", None)
        if not fds:
            return self._decode_frame(body, None)
        maps = [None] * len(fds)
        try:
            return self._decode_frame(body, (fds, maps))
        finally:
            # A mapping keeps its file; the descriptors are not needed.
            for fd in fds:
                os.close(fd)

    def _decode_frame(self, body, files):
        (flags, mlen) = _U32X2_FROM(body, 0)
        final = bool(flags & _CALL_FINAL)
        meta = bytes(memoryview(body)[8:8 + mlen])
        plan = self._response_plans.get(meta)
        if plan is None:
            plan = self._response_plan(meta, 8 + mlen, len(body))
            if not isinstance(plan, pb.InferenceResponse) and len(self._response_plans) < _LAYOUT_CACHE:
                self._response_plans[meta] = plan
        if isinstance(plan, pb.InferenceResponse):
            return plan, final  # an error or an empty response, built anew each time
        params, outputs = plan
        wrap = pb.Tensor._wrap
        tensors_out = []
        for name, shape, dt, datatype, at, nbytes, whole, idx in outputs:
            src, start = body, at
            if idx is not None:
                src, start = _mapped(files, idx, at, nbytes, name), at
            if dt is None:
                arr = pb._deserialize_bytes(memoryview(src)[start:start + nbytes]).reshape(shape)
            elif whole:
                # One array of its shape over the frame or the file (tensors.py).
                arr = np.ndarray(shape, dt, src, start)
            else:
                arr = np.frombuffer(src, dtype=dt, count=nbytes // dt.itemsize, offset=start).reshape(shape)
            tensors_out.append(wrap(name, arr, datatype))
        return pb.InferenceResponse._wrap(tensors_out, None, json.loads(params) if params else None), final

    def _response_plan(self, meta, data, end):
        """Decode a BLS_RESPONSE meta (an EXECUTE reply meta holding 0 or 1
        responses, whose data section spans body[data:end]) into (parameters
        JSON, outputs' layout: in-band data at its offset in the body), or
        the response itself for an error or no response."""
        (n,) = _U32_FROM(meta, 0)
        if n == 0:
            return pb.InferenceResponse._wrap([])
        status, a, b = _RESPONSE_HEAD_FROM(meta, 4)
        p = 13
        if status != 0:
            msg = meta[p:p + a].decode(errors="replace")
            code = meta[p + a:p + a + b].decode()
            return _error_response(msg, _CODES.get(code, pb.TritonError.INTERNAL))
        params = meta[p:p + a] if a else b""
        p += a
        numpy_types = self._codec._numpy
        outputs = []
        at = data
        for _ in range(b):
            name_len, code, ndim = _TENSOR_HEAD_FROM(meta, p)
            p += 6
            name = meta[p:p + name_len].decode()
            p += name_len
            tail = _tail(ndim)
            *shape, nbytes = tail.unpack_from(meta, p)
            p += tail.size
            idx = None
            if code & tensors._OUT_OF_BAND:
                code &= ~tensors._OUT_OF_BAND
                idx, off = tensors._LOCATION.unpack_from(meta, p)
                p += tensors._LOCATION.size
            elif nbytes:
                at += -at & 15  # aligned in the frame body (internal/ipc/doc.go)
                if nbytes > end - at:
                    raise pb.TritonModelException("BLS response: output %r declares %d bytes, %d remain" % (
                        name, nbytes, end - at))
            shape = tuple(shape)
            if code == 13:
                dt, whole = None, False
            else:
                dt = numpy_types[code] if 0 < code < len(numpy_types) else None
                if dt is None:
                    dt = numpy_types[14] = tensors._bf16_dtype()
                whole = prod(shape) * dt.itemsize == nbytes
            if idx is not None:
                outputs.append((name, shape, dt, _DATATYPES[code], off, nbytes, whole, idx))
                continue
            outputs.append((name, shape, dt, _DATATYPES[code], at, nbytes, whole, None))
            at += nbytes
        return params, outputs

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


def _mapped(files, idx, at, nbytes, name):
    """The read-only mapping of a BLS_RESPONSE's descriptor idx, which must
    hold nbytes at offset at."""
    if files is None or idx >= len(files[0]):
        raise pb.TritonModelException("BLS response: output %r in descriptor %d, %d came with the frame" % (
            name, idx, 0 if files is None else len(files[0])))
    fds, maps = files
    mm = maps[idx]
    if mm is None:
        mm = maps[idx] = mmap.mmap(fds[idx], 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    if at + nbytes > len(mm):
        raise pb.TritonModelException("BLS response: output %r: %d bytes at offset %d overrun the %d-byte file" % (
            name, nbytes, at, len(mm)))
    return mm


def _error_response(msg, code):
    return pb.InferenceResponse(error=pb.TritonError(msg, code))
