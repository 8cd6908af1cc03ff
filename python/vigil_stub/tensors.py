"""EXECUTE bodies: requests in, responses out (see internal/ipc/doc.go).

Imported only after numpy has been found importable.

Both directions use the same layout:

    uint32 meta length | meta (binary, little-endian) | tensor data, in meta order

Numeric tensors are wrapped with numpy.frombuffer without copying; BYTES
tensors are split into numpy object arrays of bytes.
"""

import json
import struct

import numpy as np

import triton_python_backend_utils as pb

from .wire import U32

_U32X4 = struct.Struct("<IIII")
_TENSOR_HEAD = struct.Struct("<IBB")  # name length, datatype code, ndim
_SEQUENCE = struct.Struct("<IBQI")  # flags, correlation ID kind, numeric ID, string ID length
_RESPONSE_HEAD = struct.Struct("<BII")  # status, then two lengths/counts
_TAILS = tuple(struct.Struct("<%dqQ" % n) for n in range(9))  # dims, data length


def _tail(ndim):
    return _TAILS[ndim] if ndim < len(_TAILS) else struct.Struct("<%dqQ" % ndim)


# Wire datatype codes (Triton's type codes) and names.
_DATATYPES = (None, "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
              "FP16", "FP32", "FP64", "BYTES", "BF16")
_CODES = {name: code for code, name in enumerate(_DATATYPES) if name}

_NUMPY = (
    None,
    np.dtype(np.bool_),
    np.dtype("<u1"),
    np.dtype("<u2"),
    np.dtype("<u4"),
    np.dtype("<u8"),
    np.dtype("<i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<i8"),
    np.dtype("<f2"),
    np.dtype("<f4"),
    np.dtype("<f8"),
    None,  # BYTES
    None,  # BF16, resolved on first use
)


def _bf16_dtype():
    # numpy has no bfloat16; use ml_dtypes' when the model environment has
    # it, else hand the raw 16-bit patterns over as uint16.
    try:
        import ml_dtypes  # noqa: PLC0415

        return np.dtype(ml_dtypes.bfloat16)
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return np.dtype("<u2")


_CODE_NAMES = pb.TritonError._NAMES

# Outputs up to this size are copied with tobytes, which is cheaper than
# building a byte view; larger ones are sent from the array's memory.
_COPY_LIMIT = 1 << 16


class Codec:
    """Decodes EXECUTE requests and encodes their responses."""

    def __init__(self):
        self._numpy = list(_NUMPY)

    def decode_requests(self, body):
        """Turn an EXECUTE body (a bytearray) into a list of pb.InferenceRequest."""
        (mlen,) = U32.unpack_from(body, 0)
        data = 4 + mlen  # where the next tensor's bytes start
        end = len(body)
        if data > end:
            raise ValueError("meta of %d bytes overruns the %d-byte body" % (mlen, end))
        view = memoryview(body)
        wrap = pb.Tensor._wrap
        tensor_head = _TENSOR_HEAD.unpack_from
        numpy_types = self._numpy
        (nreq,) = U32.unpack_from(body, 4)
        p = 8
        requests = []
        for _ in range(nreq):
            id_len, params_len, nin, nout = _U32X4.unpack_from(body, p)
            p += 16
            rid = body[p:p + id_len].decode()
            p += id_len
            params = body[p:p + params_len].decode() if params_len else None
            p += params_len
            inputs = []
            for _ in range(nin):
                name_len, code, ndim = tensor_head(body, p)
                p += 6
                name = body[p:p + name_len].decode()
                p += name_len
                tail = _tail(ndim)
                *shape, nbytes = tail.unpack_from(body, p)
                p += tail.size
                if nbytes > end - data:
                    raise ValueError("input %r: %d bytes declared, %d remain" % (name, nbytes, end - data))
                if code == 13:
                    arr = pb._deserialize_bytes(view[data:data + nbytes]).reshape(shape)
                else:
                    dt = numpy_types[code] if 0 < code < len(numpy_types) else None
                    if dt is None:
                        if code != 14:
                            raise ValueError("input %r: unknown datatype code %d" % (name, code))
                        dt = numpy_types[14] = _bf16_dtype()
                    count, rest = divmod(nbytes, dt.itemsize)
                    if rest:
                        raise ValueError("input %r: %d bytes is not a whole number of %s elements" % (
                            name, nbytes, _DATATYPES[code]))
                    arr = np.frombuffer(body, dtype=dt, count=count, offset=data)
                    if ndim != 1 or count != shape[0]:
                        arr = arr.reshape(shape)
                data += nbytes
                inputs.append(wrap(name, arr, _DATATYPES[code]))
            outputs = []
            for _ in range(nout):
                (n,) = U32.unpack_from(body, p)
                outputs.append(body[p + 4:p + 4 + n].decode())
                p += 4 + n
            flags, kind, num, slen = _SEQUENCE.unpack_from(body, p)
            p += _SEQUENCE.size
            if kind == 2:
                corr = body[p:p + slen].decode()
            else:
                corr = num if kind == 1 else 0
            p += slen
            requests.append(pb.InferenceRequest(inputs, rid, corr, outputs, params, flags=flags))
        if p != 4 + mlen or data != end:
            raise ValueError("execute body has %d meta and %d data bytes left over" % (4 + mlen - p, end - data))
        return requests

    def encode_responses(self, responses, requests):
        """Turn execute()'s responses into EXECUTE reply body parts.

        Outputs the request did not ask for are left out when it named any.
        A response whose tensors cannot be sent becomes that request's error.
        None stands for a request that answers through its response sender.
        """
        meta = [U32.pack(len(responses))]
        blobs = []
        for resp, req in zip(responses, requests):
            if resp is None:
                # Answered through the request's response sender.
                meta.append(_STREAMED)
                continue
            err = resp._err
            if err is not None:
                meta.append(_error_meta(err))
                continue
            wanted = req._requested_output_names
            out_meta = []
            out_blobs = []
            try:
                for t in resp._output_tensors:
                    if wanted and t.name() not in wanted:
                        continue
                    code, shape, data = self._encode_tensor(t)
                    name = t.name().encode()
                    ndim = len(shape)
                    nbytes = data.nbytes if isinstance(data, memoryview) else len(data)
                    out_meta.append(_TENSOR_HEAD.pack(len(name), code, ndim) + name + _tail(ndim).pack(*shape, nbytes))
                    out_blobs.append(data)
            except Exception as e:  # noqa: BLE001 - reported to the client
                meta.append(_error_meta(pb.TritonError("cannot send the response: %s" % e)))
                continue
            params = json.dumps(resp._parameters).encode() if resp._parameters else b""
            meta.append(_RESPONSE_HEAD.pack(0, len(params), len(out_meta)) + params)
            meta.extend(out_meta)
            blobs.extend(out_blobs)
        meta = b"".join(meta)
        return [U32.pack(len(meta)), meta, *blobs]

    def _encode_tensor(self, t):
        if not isinstance(t, pb.Tensor):
            raise TypeError("output %r is a %s, want triton_python_backend_utils.Tensor" % (t, type(t).__name__))
        arr = t.as_numpy()
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        shape = arr.shape
        if arr.dtype.kind in "OSU":
            return 13, shape, pb._serialize_bytes(arr)
        # Derived from the array, not the Tensor, in case the model replaced
        # or retyped the array after building the Tensor.
        datatype = pb._datatype_of(arr.dtype)
        if t._datatype == "BF16" and arr.dtype.itemsize == 2:
            datatype = "BF16"  # raw bfloat16 bits in a 2-byte array
        if datatype is None:
            raise TypeError("output %r: numpy dtype %s has no Triton datatype" % (t.name(), arr.dtype))
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        if arr.nbytes <= _COPY_LIMIT:
            return _CODES[datatype], shape, arr.tobytes()
        return _CODES[datatype], shape, memoryview(arr.reshape(-1).view(np.uint8))


_STREAMED = _RESPONSE_HEAD.pack(2, 0, 0)


def _error_meta(err):
    if isinstance(err, pb.TritonError):
        msg, code = err.message(), _CODE_NAMES.get(err.code(), "UNKNOWN")
    else:
        # Something else passed as error=: report it, classified as internal.
        msg, code = err, "INTERNAL"
    msg = ("" if msg is None else str(msg)).encode()
    code = code.encode()
    return _RESPONSE_HEAD.pack(1, len(msg), len(code)) + msg + code
