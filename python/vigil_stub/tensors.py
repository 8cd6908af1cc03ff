"""EXECUTE bodies: requests in, responses out (see internal/ipc/doc.go).

Imported only after numpy has been found importable.

Both directions use the same layout:

    uint32 meta length | meta (binary, little-endian) | tensor data, in meta order

Numeric tensors are wrapped with numpy.frombuffer without copying; BYTES
tensors are split into numpy object arrays of bytes. Each tensor's data
starts at an offset of the frame body that is a multiple of _ALIGN (zero
bytes pad the data section before it; an empty tensor takes no room), so
that arrays over a body (a bytearray, whose storage is 16-byte aligned) take
numpy's aligned loops.

Large tensors travel out of band (internal/ipc/shm.go, arena.go): the
record's datatype code has 0x80 set and is followed by a descriptor index and
an offset; the bytes are in that memory file. The server's input arena is
descriptor 0 of the request: numpy gets views of its mapping. Outputs of at
least shm_threshold bytes are copied into the output arena the request lent
(index 0xFFFFFFFF in the reply) when they fit. Both mappings are kept from
batch to batch while the server reuses its arenas, so that their pages are
faulted in once.

A client's system shared memory regions arrive as their own descriptors
(flag FLAG_REGIONS; internal/ipc/regions.go): the meta starts with a table
of them (descriptor index, registration id, access), inputs point into them,
and requested outputs may name a room in one. Inputs are read-only numpy
views of a read-only mapping: the model reads the client's bytes in place,
and cannot write into the client's input region (np.array(x) makes a
writable copy). An output that fits its room is written there by the stub;
one that is a view of an input region is pointed at, not copied. Mappings
are kept under the registration id (never reused by the server, so a later
registration of the same name never gets an old mapping), at most
_CLIENT_MAPS of them, and dropped once the client has unlinked the object,
at the next batch or ping; an array still using one keeps it mapped.

A large HTTP request body reaches the stub the same way, as a memory file
the server reuses for later requests (access 2, internal/memfile): it is
mapped privately for the batch alone, so that the model gets writable
arrays over the body's pages (writes go to pages of the stub's own, as
inputs are writable in Triton) and the file never changes under the
server. An output that is an unwritten view of it is pointed at, not
copied; after execute the stub lets go of the mapping, and the reply
says (FLAG_FILES_RELEASED) whether it went: an array the model kept keeps
the mapping alive, and the server then never reuses the file.
"""

import collections
import fcntl
import json
import mmap
import os
import struct
import threading
import weakref
from math import prod

import numpy as np

import triton_python_backend_utils as pb

from .wire import U32

_U32X4 = struct.Struct("<IIII")
_TENSOR_HEAD = struct.Struct("<IBB")  # name length, datatype code, ndim
_SEQUENCE = struct.Struct("<IBQI")  # flags, correlation ID kind, numeric ID, string ID length
_RESPONSE_HEAD = struct.Struct("<BII")  # status, then two lengths/counts
_OUT_OF_BAND = 0x80
_LOCATION = struct.Struct("<IQ")  # descriptor index, offset
_REGION = 0xFFFFFFFF  # descriptor index of the output arena the request lent
_INPUT_ARENA = 0xFFFFFFFE  # ... and of its input arena
_REGION_ENTRY = struct.Struct("<IQB")  # descriptor index, registration id, access
_DEST = struct.Struct("<IQQ")  # a requested output's room: descriptor index, offset, size
_NO_DEST = 0xFFFFFFFF
_REQUEST_FD = 0x80000000  # reply descriptor indexes from here name the request's own
_ACCESS_WRITE = 1
_ACCESS_FILE = 2
# Client region mappings kept from batch to batch.
_CLIENT_MAPS = 16
_TAILS = tuple(struct.Struct("<%dqQ" % n) for n in range(9))  # dims, data length
# In-band tensor data starts at a multiple of this from the frame body's
# start (internal/ipc/doc.go); _PADS[n] is n bytes of padding.
_ALIGN = 16
_PADS = tuple(bytes(n) for n in range(_ALIGN))


def _tail(ndim):
    return _TAILS[ndim] if ndim < len(_TAILS) else struct.Struct("<%dqQ" % ndim)


# Wire datatype codes (Triton's type codes) and names.
_DATATYPES = (None, "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
              "FP16", "FP32", "FP64", "BYTES", "BF16")
_CODES = {name: code for code, name in enumerate(_DATATYPES) if name}
_BF16 = _CODES["BF16"]

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

# Bound of the codec's small caches (output records, dtype codes).
_RECORD_CACHE = 256
# A memory file the stub makes for the server (a BLS call's inputs, a
# response's outputs) is sealed once written, so that the server may map it.
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_OUT_FILE = "vigil-bls-out"


def sealed_file(name, large, size):
    """A sealed memory file of size bytes holding large's (offset, data)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        for at, data in large:
            view = memoryview(data).cast("B")
            while view:
                n = os.pwrite(fd, view, at)
                view, at = view[n:], at + n
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


class BadResponse(Exception):
    """encode_responses met a response of the wrong type at index."""

    def __init__(self, index, response):
        super().__init__(index, response)
        self.index = index
        self.response = response


class Codec:
    """Decodes EXECUTE requests and encodes their responses."""

    BadResponse = BadResponse

    def __init__(self, shm_threshold=0):
        self._numpy = list(_NUMPY)
        # Outputs of at least this many bytes go out of band; 0: never.
        self.shm_threshold = shm_threshold
        # role -> ((st_dev, st_ino, size), mmap): the arenas' mappings.
        self._maps = {}
        # Weak references to this batch's arrays over the input arena.
        self._views = []
        # The last batch's requests as decoded from its meta (ids, names,
        # shapes, offsets), kept while batches come with the same meta.
        self._plan = None
        self._plan_key = b""
        self._plan_end = 0
        # The in-band output records sent lately, by (name, code, shape,
        # length): a model answers with the same few shapes batch after batch.
        self._records = {}
        # numpy dtype -> wire datatype code, for the dtypes seen.
        self._dtype_codes = {}
        # The dtypes whose small arrays are sent as their tobytes(): the
        # numeric little-endian ones whose code says all (a 2-byte array
        # may be BF16 bits, which the Tensor says).
        self._fast_codes = {dt: code for code, dt in enumerate(_NUMPY) if dt is not None and dt.itemsize != 2}
        # (registration id, access) -> (descriptor, mmap): client regions'
        # mappings, least recently used first; the control thread prunes it.
        self._client = collections.OrderedDict()
        self._client_lock = threading.Lock()
        # The client regions of the last decoded batch, or None.
        self.last_regions = None

    def decode_requests(self, body, base=0):
        """Turn an EXECUTE body (a bytearray, or a wire.FrameBody with
        descriptors) into a list of pb.InferenceRequest; base is the body's
        offset in its frame's body (a BLS_INFER's), which the data's
        alignment counts from."""
        fds = None if type(body) is bytearray else getattr(body, "fds", None)
        if self._views:
            self._views = []
        self.last_regions = None
        if not fds and not base and self._plan is not None and len(body) == self._plan_end:
            plan_key = self._plan_key
            if body[4:4 + len(plan_key)] == plan_key and U32.unpack_from(body, 0)[0] == len(plan_key):
                return self._from_plan(body)
        if not fds:
            return self._decode_requests(body, (), base)
        try:
            return self._decode_requests(body, fds, base)
        finally:
            # Mappings keep what they need; the descriptors are not.
            for fd in fds:
                os.close(fd)

    def _decode_requests(self, body, fds, base):
        (mlen,) = U32.unpack_from(body, 0)
        data = 4 + mlen  # where the next tensor's bytes start
        end = len(body)
        if data > end:
            raise ValueError("meta of %d bytes overruns the %d-byte body" % (mlen, end))
        wrap = pb.Tensor._wrap
        tensor_head = _TENSOR_HEAD.unpack_from
        numpy_types = self._numpy
        ndarray = np.ndarray
        p = 4
        regions = None
        if fds and getattr(body, "regions", False):
            regions, p = self._region_table(body, fds, p)
            self.last_regions = regions
        (nreq,) = U32.unpack_from(body, p)
        p += 4
        requests = []
        # What the next batch with the same meta needs: requests whose
        # inputs are all numeric and in the frame.
        plan = [] if not fds and not base else None
        for _ in range(nreq):
            id_len, params_len, nin, nout = _U32X4.unpack_from(body, p)
            p += 16
            rid = body[p:p + id_len].decode()
            p += id_len
            params = body[p:p + params_len].decode() if params_len else None
            p += params_len
            inputs = []
            input_plan = []
            for _ in range(nin):
                name_len, code, ndim = tensor_head(body, p)
                p += 6
                name = body[p:p + name_len].decode()
                p += name_len
                tail = _tail(ndim)
                shape = tail.unpack_from(body, p)
                nbytes = shape[ndim]
                shape = shape[:ndim]
                p += tail.size
                src = body
                if code & _OUT_OF_BAND:
                    code &= ~_OUT_OF_BAND
                    idx, at = _LOCATION.unpack_from(body, p)
                    p += _LOCATION.size
                    if regions is not None and idx in regions.maps:
                        src = regions.input(idx, at, nbytes, name)
                    else:
                        src = self._input_region(fds, idx, at, nbytes, name)
                else:
                    if nbytes:
                        data += -(base + data) & 15  # _ALIGN
                        if nbytes > end - data:
                            raise ValueError("input %r: %d bytes declared, %d remain" % (name, nbytes, end - data))
                    at = data
                    data += nbytes
                if code == 13:
                    arr = pb._deserialize_bytes(memoryview(src)[at:at + nbytes]).reshape(shape)
                    plan = None
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
                    if (shape[0] if ndim == 1 else prod(shape)) != count:
                        raise ValueError("input %r: shape %s does not hold the %d elements sent" % (
                            name, list(shape), count))
                    # One array of the right shape over the bytes, no copy
                    # (frombuffer and reshape would make two).
                    arr = ndarray(shape, dt, src, at)
                    if regions is not None and src is not body and regions.holds(src):
                        plan = None  # a client region's: not the arena's
                    elif src is not body:
                        self._views.append(weakref.ref(arr))
                        plan = None
                    elif plan is not None:
                        input_plan.append((name, shape, dt, _DATATYPES[code], at))
                inputs.append(wrap(name, arr, _DATATYPES[code]))
            outputs = []
            dests = None
            for _ in range(nout):
                (n,) = U32.unpack_from(body, p)
                outputs.append(body[p + 4:p + 4 + n].decode())
                p += 4 + n
                if regions is not None:
                    idx, at, room = _DEST.unpack_from(body, p)
                    p += _DEST.size
                    if idx != _NO_DEST:
                        if dests is None:
                            dests = {}
                        dests[outputs[-1]] = regions.room(idx, at, room, outputs[-1])
            if regions is not None:
                regions.dests.append(dests)
            flags, kind, num, slen = _SEQUENCE.unpack_from(body, p)
            p += _SEQUENCE.size
            if kind == 2:
                corr = body[p:p + slen].decode()
            else:
                corr = num if kind == 1 else 0
            p += slen
            requests.append(pb.InferenceRequest._incoming(inputs, rid, outputs, params, corr, flags))
            if plan is not None:
                plan.append((rid, params, tuple(input_plan), tuple(outputs), corr, flags))
        if p != 4 + mlen or data != end:
            raise ValueError("execute body has %d meta and %d data bytes left over" % (4 + mlen - p, end - data))
        self._plan = plan
        if plan is not None:
            self._plan_key, self._plan_end = bytes(body[4:4 + mlen]), end
        return requests

    def _from_plan(self, body):
        """The requests of a batch whose meta is the last batch's: the same
        ids, names, shapes and offsets, only the bytes differ."""
        wrap = pb.Tensor._wrap
        incoming = pb.InferenceRequest._incoming
        ndarray = np.ndarray
        requests = []
        for rid, params, inputs, outputs, corr, flags in self._plan:
            tensors = []
            for name, shape, dt, datatype, at in inputs:
                tensors.append(wrap(name, ndarray(shape, dt, body, at), datatype))
            requests.append(incoming(tensors, rid, list(outputs), params, corr, flags))
        return requests

    def inputs_released(self):
        """Whether no array over the input arena from the last decoded batch
        is alive (the model kept none), so that the server may reuse it."""
        views = self._views
        if not views:
            return True
        self._views = []
        return all(ref() is None for ref in views)

    def take_regions(self):
        """The client regions of the batch just decoded (None without);
        the codec keeps no reference, so their mappings go with the batch."""
        regions, self.last_regions = self.last_regions, None
        return regions

    def _region_table(self, body, fds, p):
        """Read the client region table at p: the batch's Regions, and where
        the meta goes on."""
        (n,) = U32.unpack_from(body, p)
        p += 4
        regions = Regions()
        for _ in range(n):
            idx, rid, access = _REGION_ENTRY.unpack_from(body, p)
            p += _REGION_ENTRY.size
            if idx >= len(fds):
                raise ValueError("client region in descriptor %d, %d came with the frame" % (idx, len(fds)))
            if access == _ACCESS_FILE:
                # The server's reused file: this batch's, private, not kept.
                mm = mmap.mmap(fds[idx], os.fstat(fds[idx]).st_size, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
                regions.add(idx, mm, access)
                continue
            regions.add(idx, self._client_map(fds[idx], rid, access), access)
        self.prune_regions(keep=regions)
        return regions, p

    def _client_map(self, fd, rid, access):
        """The mapping of a client region's object, kept under its
        registration id; fd stays the caller's."""
        key = (rid, access)
        with self._client_lock:
            hit = self._client.get(key)
            if hit is not None:
                self._client.move_to_end(key)
                return hit[1]
        size = os.fstat(fd).st_size
        if access == _ACCESS_WRITE:
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        kept = os.dup(fd)
        with self._client_lock:
            self._client[key] = (kept, mm)
            while len(self._client) > _CLIENT_MAPS:
                _, (old, _) = self._client.popitem(last=False)
                os.close(old)
        return mm

    def prune_regions(self, keep=None):
        """Forget the mappings of client objects that have been unlinked
        (the client destroyed the region), but for keep's; an array still
        over one keeps it mapped until the array goes."""
        in_use = keep.mapped if keep is not None else ()
        with self._client_lock:
            for key, (fd, mm) in list(self._client.items()):
                if any(mm is m for m in in_use):
                    continue
                try:
                    gone = os.fstat(fd).st_nlink == 0
                except OSError:
                    gone = True
                if gone:
                    del self._client[key]
                    os.close(fd)

    def encode_responses(self, responses, requests, region=None, regions=None, files=None, base=0,
                         check=None):
        """Turn execute()'s responses into EXECUTE reply body parts.

        Outputs the request did not ask for are left out when it named any.
        A response whose tensors cannot be sent becomes that request's error.
        None stands for a request that answers through its response sender.
        region is the descriptor of the output arena the request lent, or
        None: outputs of at least shm_threshold bytes are copied into it
        while they fit. regions are the client regions the batch passed
        (the execute reply only): outputs go into the rooms requested for
        them, and views of input regions are pointed at. files, a list, says
        that the batch takes output files (FLAG_OUT_FILES;
        internal/ipc/replyfiles.go): each response's numeric outputs of at
        least shm_threshold bytes go into one sealed memory file made for
        it, whose descriptor is appended to files, to send with the reply.
        base is the body's offset in its frame's body, from which the
        data's alignment counts. check, if given, is the type every
        response must be (None included): another raises BadResponse.
        """
        big = self.shm_threshold if region is not None and self.shm_threshold > 0 else 0
        fbig = self.shm_threshold if files is not None and self.shm_threshold > 0 else 0
        out, off = (self._mapping("out", region), 0) if big else (None, 0)
        # An output that is a view of an input stays where it is.
        inp = self._maps.get("in") if big and self._views else None
        in_lo = np.frombuffer(inp[1], dtype=np.uint8, count=1).ctypes.data if inp else 0
        in_hi = in_lo + len(inp[1]) if inp else 0
        n = len(responses)
        meta = [_COUNTS[n] if n < len(_COUNTS) else U32.pack(n)]
        blobs = []
        rel = 0  # in-band data bytes so far, from the data section's aligned start
        records = self._records
        encode = self._encode_tensor
        tensor_type = pb.Tensor
        ndarray = np.ndarray
        fast = self._fast_codes
        copy_limit = _COPY_LIMIT
        for i, (resp, req) in enumerate(zip(responses, requests)):
            dests = regions.dests[i] if regions is not None and i < len(regions.dests) else None
            if check is not None and type(resp) is not check and not isinstance(resp, check):
                raise BadResponse(i, resp)
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
            in_file = []  # (offset, data) of the outputs for this response's file
            foff = 0
            orel = rel
            try:
                for t in resp._output_tensors:
                    # The common case first: a pb.Tensor over a small
                    # numeric little-endian numpy array.
                    if type(t) is tensor_type:
                        tname = t._name
                        if wanted and tname not in wanted:
                            continue
                        arr = t._array
                        code = fast.get(arr.dtype) if type(arr) is ndarray else None
                        if code is not None and arr.nbytes <= copy_limit:
                            shape = arr.shape
                            data = arr.tobytes()  # C order, whatever the array's strides
                        else:
                            code, shape, data = encode(t)
                    else:
                        code, shape, data = encode(t)  # raises for what is not a pb.Tensor
                        tname = t.name()
                        if wanted and tname not in wanted:
                            continue
                    name = tname.encode()
                    ndim = len(shape)
                    nbytes = data.nbytes if type(data) is memoryview else len(data)
                    if regions is not None and nbytes:
                        loc = regions.place(data, nbytes, dests.get(tname) if dests else None)
                        if loc is not None:
                            out_meta.append(_TENSOR_HEAD.pack(len(name), code | _OUT_OF_BAND, ndim) + name +
                                            _tail(ndim).pack(*shape, nbytes) + _LOCATION.pack(*loc))
                            continue
                    if in_lo and nbytes >= big and isinstance(data, memoryview):
                        at = np.frombuffer(data, dtype=np.uint8, count=1).ctypes.data
                        if in_lo <= at and at + nbytes <= in_hi:
                            out_meta.append(_TENSOR_HEAD.pack(len(name), code | _OUT_OF_BAND, ndim) + name +
                                            _tail(ndim).pack(*shape, nbytes) + _LOCATION.pack(_INPUT_ARENA, at - in_lo))
                            continue
                    if fbig and nbytes >= fbig and code != 13:
                        out_meta.append(_TENSOR_HEAD.pack(len(name), code | _OUT_OF_BAND, ndim) + name +
                                        _tail(ndim).pack(*shape, nbytes) + _LOCATION.pack(len(files), foff))
                        in_file.append((foff, data))
                        foff += (nbytes + 63) & ~63
                        continue
                    if big and nbytes >= big and off + nbytes <= len(out):
                        out[off:off + nbytes] = data
                        out_meta.append(_TENSOR_HEAD.pack(len(name), code | _OUT_OF_BAND, ndim) + name +
                                        _tail(ndim).pack(*shape, nbytes) + _LOCATION.pack(_REGION, off))
                        off += (nbytes + 63) & ~63
                        continue
                    key = (name, code, shape, nbytes)
                    record = records.get(key)
                    if record is None:
                        record = _TENSOR_HEAD.pack(len(name), code, ndim) + name + _tail(ndim).pack(*shape, nbytes)
                        if len(records) >= _RECORD_CACHE:
                            records.clear()
                        records[key] = record
                    out_meta.append(record)
                    if nbytes:
                        if orel & 15:
                            out_blobs.append(_PADS[-orel & 15])
                            orel += -orel & 15
                        out_blobs.append(data)
                        orel += nbytes
                if in_file:
                    files.append(sealed_file(_OUT_FILE, in_file, foff))
            except Exception as e:  # noqa: BLE001 - reported to the client
                meta.append(_error_meta(pb.TritonError("cannot send the response: %s" % e)))
                continue
            rel = orel
            params = resp._parameters
            if params:
                params = json.dumps(params).encode()
                meta.append(_RESPONSE_HEAD.pack(0, len(params), len(out_meta)) + params)
            else:
                nout = len(out_meta)
                meta.append(_OK_HEADS[nout] if nout < len(_OK_HEADS) else _RESPONSE_HEAD.pack(0, 0, nout))
            meta.extend(out_meta)
            blobs.extend(out_blobs)
        meta = b"".join(meta)
        if not blobs:
            return [U32.pack(len(meta)), meta]
        return [U32.pack(len(meta)), meta, _PADS[-(base + 4 + len(meta)) & 15], *blobs]

    def _mapping(self, role, fd):
        """The shared mapping of an arena, kept while the server sends the
        same one (same file and size) for this role."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size)
        cached = self._maps.get(role)
        if cached is not None and cached[0] == key:
            return cached[1]
        # A mapping replaced here lives on while arrays still use it.
        mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._maps[role] = (key, mm)
        return mm

    def _input_region(self, fds, idx, offset, nbytes, name):
        if idx >= len(fds):
            raise ValueError("input %r: in descriptor %d, %d came with the frame" % (name, idx, len(fds)))
        # Descriptor 0 is the server's input arena: its mapping is kept.
        mm = self._mapping("in", fds[idx]) if idx == 0 else mmap.mmap(
            fds[idx], 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        if offset + nbytes > len(mm):
            raise ValueError("input %r: %d bytes at offset %d overrun the %d-byte region" % (
                name, nbytes, offset, len(mm)))
        return mm

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
        dtype = arr.dtype
        code = self._dtype_codes.get(dtype)
        if code is None:
            datatype = pb._datatype_of(dtype)
            code = _CODES[datatype] if datatype is not None else 0
            if len(self._dtype_codes) < _RECORD_CACHE:
                self._dtype_codes[dtype] = code
        if t._datatype == "BF16" and dtype.itemsize == 2:
            code = _BF16  # raw bfloat16 bits in a 2-byte array
        if not code:
            raise TypeError("output %r: numpy dtype %s has no Triton datatype" % (t.name(), dtype))
        if dtype.byteorder == ">":
            arr = arr.astype(dtype.newbyteorder("<"))
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        if arr.nbytes <= _COPY_LIMIT:
            return code, shape, arr.tobytes()
        return code, shape, memoryview(arr.reshape(-1).view(np.uint8))


class Regions:
    """The client regions one EXECUTE passed: mappings by frame descriptor
    index, and per request the rooms its outputs may go into."""

    __slots__ = ("maps", "mapped", "dests", "files", "_bounds")

    def __init__(self):
        self.maps = {}  # descriptor index -> (mmap, access)
        self.mapped = []
        self.dests = []  # per request: {output name: (mmap, index, offset, size)} or None
        self.files = []  # the private mappings of the server's reused files
        self._bounds = []  # (lo, hi, index, private) of the input regions, by address

    def add(self, idx, mm, access):
        self.maps[idx] = (mm, access)
        self.mapped.append(mm)
        if access == _ACCESS_FILE:
            self.files.append(mm)
        if access != _ACCESS_WRITE and len(mm):
            lo = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
            self._bounds.append((lo, lo + len(mm), idx, access == _ACCESS_FILE))

    def release_files(self):
        """Let go of the batch's mappings; whether those of the reused files
        went with them: an array over one (numpy holds its mapping as the
        array's base) that outlived the batch keeps it alive. Called once
        execute's arrays are gone; the Regions are unusable after."""
        refs = [weakref.ref(mm) for mm in self.files]
        self.files, self.mapped, self.maps, self.dests = [], [], {}, []
        return all(ref() is None for ref in refs)

    def holds(self, mm):
        return any(mm is m for m in self.mapped)

    def input(self, idx, at, nbytes, name):
        mm, access = self.maps[idx]
        if access == _ACCESS_WRITE:
            raise ValueError("input %r: in descriptor %d, an output room" % (name, idx))
        if at + nbytes > len(mm):
            raise ValueError("input %r: %d bytes at offset %d overrun the %d-byte client region" % (
                name, nbytes, at, len(mm)))
        return mm

    def room(self, idx, at, size, name):
        entry = self.maps.get(idx)
        if entry is None or entry[1] != _ACCESS_WRITE:
            raise ValueError("output %r: room in descriptor %d, which is no output region" % (name, idx))
        if at + size > len(entry[0]):
            raise ValueError("output %r: %d bytes at offset %d overrun the %d-byte client region" % (
                name, size, at, len(entry[0])))
        return entry[0], idx, at, size

    def place(self, data, nbytes, dest):
        """Where an output of nbytes goes: (descriptor index, offset) of the
        room it was written into, or of the input region it is a view of;
        None to send it as usual."""
        if dest is not None:
            mm, idx, at, size = dest
            if nbytes <= size:
                mm[at:at + nbytes] = data
                return _REQUEST_FD + idx, at
        if self._bounds and isinstance(data, memoryview):
            addr = np.frombuffer(data, dtype=np.uint8, count=1).ctypes.data
            for lo, hi, idx, private in self._bounds:
                if lo <= addr and addr + nbytes <= hi:
                    if private and not _unwritten(addr, nbytes):
                        return None  # the model wrote it: its own pages, not the file's
                    return _REQUEST_FD + idx, addr - lo
        return None


_PAGE = mmap.PAGESIZE
_pagemap = None


def _unwritten(addr, nbytes):
    """Whether no page of [addr, addr+nbytes) in a private file mapping was
    written (copied on write into a page of the process's own), read from
    /proc/self/pagemap: a written page is present or swapped and no longer
    the file's (bit 61). False when pagemap cannot be read."""
    global _pagemap
    if nbytes <= 0:
        return True
    first, last = addr // _PAGE, (addr + nbytes - 1) // _PAGE
    try:
        if _pagemap is None:
            _pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        raw = os.pread(_pagemap, (last - first + 1) * 8, first * 8)
    except OSError:
        return False
    entries = np.frombuffer(raw, dtype="<u8")
    if len(entries) != last - first + 1:
        return False
    own = ((entries >> np.uint64(62)) != 0) & ((entries >> np.uint64(61)) & np.uint64(1) == 0)
    return not own.any()


_STREAMED = _RESPONSE_HEAD.pack(2, 0, 0)
_COUNTS = tuple(U32.pack(n) for n in range(64))
# The heads of responses with no parameters and n outputs.
_OK_HEADS = tuple(_RESPONSE_HEAD.pack(0, 0, n) for n in range(16))


def _error_meta(err):
    if isinstance(err, pb.TritonError):
        msg, code = err.message(), _CODE_NAMES.get(err.code(), "UNKNOWN")
    else:
        # Something else passed as error=: report it, classified as internal.
        msg, code = err, "INTERNAL"
    msg = ("" if msg is None else str(msg)).encode()
    code = code.encode()
    return _RESPONSE_HEAD.pack(1, len(msg), len(code)) + msg + code
