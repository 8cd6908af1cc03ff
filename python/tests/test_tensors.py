"""The EXECUTE codec against hand-built bodies (the Go side's layout)."""

import json
import struct

import numpy as np
import pytest

import triton_python_backend_utils as pb
from vigil_stub.tensors import Codec


def tensor_record(name, code, shape, nbytes):
    n = name.encode()
    return struct.pack("<IBB", len(n), code, len(shape)) + n + struct.pack("<%dqQ" % len(shape), *shape, nbytes)


def sequence_record(flags=0, corr=0):
    if isinstance(corr, str):
        c = corr.encode()
        return struct.pack("<IBQI", flags, 2 if c else 0, 0, len(c)) + c
    return struct.pack("<IBQI", flags, 1 if corr else 0, corr, 0)


def request_body(requests):
    """requests: list of (id, params, [(name, code, shape, data)], [output names][, (flags, correlation id)]).
    Each input's data starts 16-byte aligned in the body, as the server lays it out."""
    meta = [struct.pack("<I", len(requests))]
    data = []
    for rid, params, inputs, outputs, *seq in requests:
        rid, params = rid.encode(), params.encode()
        meta.append(struct.pack("<IIII", len(rid), len(params), len(inputs), len(outputs)) + rid + params)
        for name, code, shape, raw in inputs:
            meta.append(tensor_record(name, code, shape, len(raw)))
            data.append(raw)
        for o in outputs:
            o = o.encode()
            meta.append(struct.pack("<I", len(o)) + o)
        meta.append(sequence_record(*(seq[0] if seq else ())))
    meta = b"".join(meta)
    body = bytearray(struct.pack("<I", len(meta)) + meta)
    for raw in data:
        if raw:
            body += bytes(-len(body) % 16) + raw
    return body


def parse_reply(parts):
    body = b"".join(bytes(p) for p in parts)
    (mlen,) = struct.unpack_from("<I", body, 0)
    p, data = 8, 4 + mlen
    (n,) = struct.unpack_from("<I", body, 4)
    out = []
    for _ in range(n):
        status, a, b = struct.unpack_from("<BII", body, p)
        p += 9
        if status:
            out.append(("error", body[p:p + a].decode(), body[p + a:p + a + b].decode()))
            p += a + b
            continue
        params = json.loads(body[p:p + a]) if a else None
        p += a
        tensors = []
        for _ in range(b):
            nlen, code, ndim = struct.unpack_from("<IBB", body, p)
            p += 6
            name = body[p:p + nlen].decode()
            p += nlen
            *shape, nbytes = struct.unpack_from("<%dqQ" % ndim, body, p)
            p += 8 * ndim + 8
            if nbytes:
                assert not any(body[data:data + (-data % 16)]), "padding is zeros"
                data += -data % 16
            tensors.append((name, code, shape, body[data:data + nbytes]))
            data += nbytes
        out.append(("ok", params, tensors))
    assert p == 4 + mlen and data == len(body)
    return out


def test_decode_numeric_and_bytes():
    fp32 = np.arange(6, dtype="<f4").reshape(2, 3)
    strings = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    body = request_body([
        ("r1", '{"k": 1}', [("A", 11, [2, 3], fp32.tobytes()), ("S", 13, [2], strings)], ["Y"]),
        ("r2", "", [("E", 6, [0, 4], b""), ("B", 1, [2], b"\x01\x00")], []),
    ])
    r1, r2 = Codec().decode_requests(body)
    assert r1.request_id() == "r1" and json.loads(r1.parameters()) == {"k": 1}
    assert r1.requested_output_names() == ["Y"]
    a = pb.get_input_tensor_by_name(r1, "A")
    assert a.triton_dtype() == pb.TYPE_FP32 and a.shape() == [2, 3]
    np.testing.assert_array_equal(a.as_numpy(), fp32)
    s = pb.get_input_tensor_by_name(r1, "S").as_numpy()
    assert s.dtype == np.object_ and list(s) == [b"hi", b""]
    assert r2.parameters() == "{}"
    assert pb.get_input_tensor_by_name(r2, "E").as_numpy().shape == (0, 4)
    assert list(pb.get_input_tensor_by_name(r2, "B").as_numpy()) == [True, False]


def test_decode_sequence():
    body = request_body([
        ("a", "", [], [], (pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START, 1000)),
        ("b", "", [], [], (pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END, "0b2f-uuid")),
        ("c", "", [], [], (0, (1 << 64) - 1)),
        ("d", "", [], []),
    ])
    a, b, c, d = Codec().decode_requests(body)
    assert (a.correlation_id(), a.flags()) == (1000, 1)
    assert (b.correlation_id(), b.flags()) == ("0b2f-uuid", 2)
    assert (c.correlation_id(), c.flags()) == ((1 << 64) - 1, 0)
    assert (d.correlation_id(), d.flags()) == (0, 0)


def test_decode_reuses_the_last_meta():
    """A batch with the last batch's meta is decoded from the kept plan: its
    own bytes, fresh requests and lists, and a new meta decodes afresh."""
    codec = Codec()

    def body(values, name="A", rid="r"):
        arr = np.array(values, dtype="<i4").reshape(1, 3)
        return request_body([(rid, '{"p": 1}', [(name, 8, [1, 3], arr.tobytes())], ["Y"], (1, 7))])

    first = codec.decode_requests(body([1, 2, 3]))[0]
    first.requested_output_names().append("changed by the model")
    (again,) = codec.decode_requests(body([4, 5, 6]))
    np.testing.assert_array_equal(pb.get_input_tensor_by_name(again, "A").as_numpy(), [[4, 5, 6]])
    np.testing.assert_array_equal(pb.get_input_tensor_by_name(first, "A").as_numpy(), [[1, 2, 3]])
    assert again is not first and again.requested_output_names() == ["Y"]
    assert (again.request_id(), again.parameters(), again.correlation_id(), again.flags()) == ("r", '{"p": 1}', 7, 1)
    (renamed,) = codec.decode_requests(body([7, 8, 9], name="B", rid="s"))
    assert renamed.request_id() == "s" and pb.get_input_tensor_by_name(renamed, "A") is None
    np.testing.assert_array_equal(pb.get_input_tensor_by_name(renamed, "B").as_numpy(), [[7, 8, 9]])
    with pytest.raises(ValueError, match="left over"):
        codec.decode_requests(body([1, 2, 3], name="B", rid="s") + b"\x00")


@pytest.mark.parametrize("inputs,match", [
    ([("A", 11, [3], b"\x00" * 8)], "3"),  # 2 elements for shape [3]
    ([("A", 11, [2], b"\x00" * 7)], "whole number"),
    ([("A", 99, [1], b"\x00")], "unknown datatype"),
])
def test_decode_rejects(inputs, match):
    with pytest.raises(ValueError, match=match):
        Codec().decode_requests(request_body([("r", "", inputs, [])]))


def test_encode_responses():
    reqs = [pb.InferenceRequest._incoming([], "", ["Y"], None)] + [pb.InferenceRequest._incoming([], "", [], None)
                                                                   for _ in range(3)]
    big = np.arange(1 << 15, dtype=np.float64)  # larger than the copy limit: sent as a view
    resps = [
        pb.InferenceResponse([pb.Tensor("X", np.zeros(1, np.int8)), pb.Tensor("Y", np.array([[1.5]], "<f2"))]),
        pb.InferenceResponse([pb.Tensor("S", np.array(["a", "é"])), pb.Tensor("BIG", big)], parameters={"p": 1}),
        pb.InferenceResponse(error=pb.TritonError("nope", pb.TritonError.NOT_FOUND)),
        pb.InferenceResponse([pb.Tensor("C", np.zeros(1, np.int8))]),
    ]
    resps[3].output_tensors()[0]._array = np.zeros(1, np.complex64)
    r0, r1, r2, r3 = parse_reply(Codec().encode_responses(resps, reqs))
    assert r0 == ("ok", None, [("Y", 10, [1, 1], np.array([[1.5]], "<f2").tobytes())])
    assert r1[1] == {"p": 1}
    assert r1[2][0] == ("S", 13, [2], struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + "é".encode())
    assert r1[2][1][:3] == ("BIG", 12, [1 << 15]) and r1[2][1][3] == big.tobytes()
    assert r2 == ("error", "nope", "NOT_FOUND")
    assert r3[0] == "error" and "complex64" in r3[1] and r3[2] == "INTERNAL"


def test_bf16_passthrough():
    bits = np.array([0x3F80, 0xC000], dtype="<u2")  # 1.0, -2.0
    (req,) = Codec().decode_requests(request_body([("r", "", [("H", 14, [2], bits.tobytes())], [])]))
    h = req.inputs()[0]
    assert h.triton_dtype() == pb.TYPE_BF16 and h.as_numpy().dtype.itemsize == 2
    out = pb.Tensor("H_OUT", h.as_numpy(), triton_dtype=h.triton_dtype())
    ((_, _, tensors),) = parse_reply(Codec().encode_responses([pb.InferenceResponse([out])], [req]))
    assert tensors == [("H_OUT", 14, [2], bits.tobytes())]


def test_client_regions():
    """A batch passing client regions (internal/ipc/regions.go): inputs are
    read-only views of the region, an output that fits its room is written
    there, one that is a view of an input region is pointed at, and the
    mappings are kept under the registration id until the object is unlinked."""
    import mmap
    import os
    import tempfile

    from vigil_stub.wire import FrameBody

    n = 1 << 17  # bytes of each FP32 tensor (over the size copied with tobytes)
    d = tempfile.mkdtemp()
    paths = [os.path.join(d, "in"), os.path.join(d, "out")]
    with open(paths[0], "wb") as f:
        f.write(b"\0" * 64 + np.arange(n // 4, dtype=np.float32).tobytes())
    with open(paths[1], "wb") as f:
        f.write(b"\0" * (2 * n))

    def body(rid_in=1, rid_out=2):
        meta = struct.pack("<I", 2) + struct.pack("<IQB", 0, rid_in, 0) + struct.pack("<IQB", 1, rid_out, 1)
        meta += struct.pack("<I", 1)
        meta += struct.pack("<IIII", 1, 0, 1, 2) + b"r"
        meta += tensor_record("A", 11 | 0x80, (n // 4,), n) + struct.pack("<IQ", 0, 64)
        meta += struct.pack("<I", 1) + b"O" + struct.pack("<IQQ", 1, 128, n)
        meta += struct.pack("<I", 1) + b"V" + struct.pack("<IQQ", 0xFFFFFFFF, 0, 0)
        meta += sequence_record()
        b = FrameBody(struct.pack("<I", len(meta)) + meta)
        b.fds = [os.open(paths[0], os.O_RDONLY), os.open(paths[1], os.O_RDWR)]
        b.out_region = None
        b.regions = True
        return b

    codec = Codec(shm_threshold=1024)
    (req,) = codec.decode_requests(body())
    regions = codec.take_regions()
    assert codec.take_regions() is None
    a = req.inputs()[0].as_numpy()
    np.testing.assert_array_equal(a, np.arange(n // 4, dtype=np.float32))
    assert not a.flags.writeable, "a client's input region must not be writable by the model"
    with pytest.raises(ValueError):
        a[0] = 1
    resp = pb.InferenceResponse(output_tensors=[pb.Tensor("O", a * 2), pb.Tensor("V", a)])
    out = parse_reply_locations(codec.encode_responses([resp], [req], None, regions))
    assert out == [("O", 0x80000000 + 1, 128, n), ("V", 0x80000000 + 0, 64, n)]
    with open(paths[1], "rb") as f:
        f.seek(128)
        np.testing.assert_array_equal(np.frombuffer(f.read(n), np.float32), a * 2)

    # The same registrations again: the cached mappings; a new id maps anew.
    codec.decode_requests(body())
    assert len(codec._client) == 2
    codec.decode_requests(body(rid_in=3))
    assert len(codec._client) == 3
    # Unlinked by the client: the mappings go at the next prune.
    del req, a, resp, regions
    for p in paths:
        os.unlink(p)
    codec.take_regions()
    codec.prune_regions()
    assert len(codec._client) == 0


def test_reused_body_file():
    """A large HTTP body's memory file (region access 2, internal/memfile):
    inputs are writable views of a private mapping, so a model's write stays
    in the stub; an unwritten output view is pointed at, a written one is
    not; release_files says whether an array over the file outlived the
    batch."""
    import os

    from vigil_stub.wire import FrameBody

    n = 1 << 17
    fd = os.memfd_create("body")
    os.write(fd, b"\0" * 64 + np.arange(n // 4, dtype=np.float32).tobytes())

    def body():
        meta = struct.pack("<I", 1) + struct.pack("<IQB", 0, 1 << 62, 2)
        meta += struct.pack("<I", 1)
        meta += struct.pack("<IIII", 1, 0, 1, 1) + b"r"
        meta += tensor_record("A", 11 | 0x80, (n // 4,), n) + struct.pack("<IQ", 0, 64)
        meta += struct.pack("<I", 1) + b"V" + struct.pack("<IQQ", 0xFFFFFFFF, 0, 0)
        meta += sequence_record()
        b = FrameBody(struct.pack("<I", len(meta)) + meta)
        b.fds = [os.open("/proc/self/fd/%d" % fd, os.O_RDONLY)]
        b.out_region = None
        b.regions = True
        return b

    codec = Codec(shm_threshold=1024)
    (req,) = codec.decode_requests(body())
    regions = codec.take_regions()
    a = req.inputs()[0].as_numpy()
    np.testing.assert_array_equal(a, np.arange(n // 4, dtype=np.float32))
    assert a.flags.writeable
    resp = pb.InferenceResponse(output_tensors=[pb.Tensor("V", a)])
    assert parse_reply_locations(codec.encode_responses([resp], [req], None, regions)) == [
        ("V", 0x80000000, 64, n)]
    del resp
    a[5] = -1  # the model's own page now
    assert os.pread(fd, 4, 64 + 20) == np.float32(5).tobytes(), "the write reached the file"
    resp = pb.InferenceResponse(output_tensors=[pb.Tensor("V", a)])
    ((_, _, tensors),) = parse_reply(codec.encode_responses([resp], [req], None, regions))
    assert tensors[0][0] == "V" and np.frombuffer(tensors[0][3], np.float32)[5] == -1
    # The model kept an array: not released.
    kept = a
    del req, a, resp
    assert not regions.release_files()
    del kept
    (req,) = codec.decode_requests(body())
    regions = codec.take_regions()
    del req
    assert regions.release_files()
    os.close(fd)


def parse_reply_locations(parts):
    """(name, descriptor index, offset, bytes) of a reply's out-of-band outputs."""
    body = b"".join(bytes(p) for p in parts)
    p = 8
    status, a, b = struct.unpack_from("<BII", body, p)
    p += 9 + a
    out = []
    for _ in range(b):
        nlen, code, ndim = struct.unpack_from("<IBB", body, p)
        p += 6
        name = body[p:p + nlen].decode()
        p += nlen
        *_shape, nbytes = struct.unpack_from("<%dqQ" % ndim, body, p)
        p += 8 * ndim + 8
        assert code & 0x80, (name, code)
        idx, off = struct.unpack_from("<IQ", body, p)
        p += 12
        out.append((name, idx, off, nbytes))
    return out


def test_large_outputs_in_a_sealed_file_per_response():
    """A batch that takes output files (FLAG_OUT_FILES;
    internal/ipc/replyfiles.go): each response's numeric outputs of at least
    shm_threshold bytes go into one sealed memory file of its own, at
    64-byte aligned offsets; small and BYTES outputs stay in the frame."""
    import fcntl
    import os

    codec = Codec(shm_threshold=1024)
    reqs = [pb.InferenceRequest._incoming([], "r%d" % i, [], None, 0, 0) for i in range(3)]
    big = [np.arange(1000, dtype=np.float32) + i for i in range(2)]
    odd = np.arange(301, dtype=np.int32)  # 1204 bytes: the next offset is aligned up
    words = np.array([b"x" * 2000], dtype=np.object_)
    resps = [
        pb.InferenceResponse([pb.Tensor("A", big[0]), pb.Tensor("ODD", odd), pb.Tensor("B", big[0] * 2),
                              pb.Tensor("S", np.arange(3, dtype=np.int8)), pb.Tensor("W", words)]),
        pb.InferenceResponse([pb.Tensor("S", np.arange(3, dtype=np.int8))]),  # nothing large: no file
        pb.InferenceResponse([pb.Tensor("A", big[1])]),
    ]
    files = []
    parts = codec.encode_responses(resps, reqs, files=files)
    try:
        assert len(files) == 2
        for fd in files:
            assert os.readlink("/proc/self/fd/%d" % fd).startswith("/memfd:vigil-bls-out")
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
        body = b"".join(bytes(p) for p in parts)
        assert big[0].tobytes() not in body and words[0] in body
        (mlen,) = struct.unpack_from("<I", body, 0)
        meta = body[4:4 + mlen]
        locs = {}
        p = 4
        for r in range(3):
            status, a, b = struct.unpack_from("<BII", meta, p)
            p += 9 + a
            for _ in range(b):
                nlen, code, ndim = struct.unpack_from("<IBB", meta, p)
                p += 6
                name = meta[p:p + nlen].decode()
                p += nlen + 8 * ndim + 8
                if code & 0x80:
                    locs[(r, name)] = struct.unpack_from("<IQ", meta, p)
                    p += 12
        # Descriptor index i is the i-th file; 4000 bytes take 4032, 1204 take 1216.
        assert locs == {(0, "A"): (0, 0), (0, "ODD"): (0, 4032), (0, "B"): (0, 5248), (2, "A"): (1, 0)}
        assert os.pread(files[0], 4000, 0) == big[0].tobytes()
        assert os.pread(files[0], odd.nbytes, 4032) == odd.tobytes()
        assert os.pread(files[0], 4000, 5248) == (big[0] * 2).tobytes()
        assert os.pread(files[1], 4000, 0) == big[1].tobytes()
    finally:
        for fd in files:
            os.close(fd)
    # Without files (a batch that does not take them) nothing changes.
    assert b"".join(bytes(p) for p in codec.encode_responses(resps[:1], reqs[:1])).count(big[0].tobytes()) == 1


_ALIGN_INPUTS = [
    ("B", 1, [3], np.array([1, 0, 1], dtype=np.bool_)),
    ("U8", 2, [5], np.arange(5, dtype=np.uint8)),
    ("U16", 3, [3], np.arange(3, dtype="<u2")),
    ("U32", 4, [1], np.arange(1, dtype="<u4")),
    ("U64", 5, [2], np.arange(2, dtype="<u8")),
    ("I8", 6, [7], np.arange(7, dtype=np.int8)),
    ("I16", 7, [1], np.arange(1, dtype="<i2")),
    ("I32", 8, [1, 16], np.arange(16, dtype="<i4").reshape(1, 16)),
    ("I64", 9, [3], np.arange(3, dtype="<i8")),
    ("F16", 10, [3], np.arange(3, dtype="<f2")),
    ("F32", 11, [2, 3], np.arange(6, dtype="<f4").reshape(2, 3)),
    ("F64", 12, [1], np.arange(1, dtype="<f8")),
    ("H", 14, [5], np.arange(5, dtype="<u2")),  # BF16 bits
    ("E", 11, [0, 4], np.zeros((0, 4), dtype="<f4")),
]
_WORDS = np.array([b"a", b"bcd", b""], dtype=object)


@pytest.mark.parametrize("nreq", [1, 2, 5])
@pytest.mark.parametrize("words_at", [None, 0, 3, len(_ALIGN_INPUTS)])
def test_inputs_are_16_byte_aligned(nreq, words_at):
    """Every numeric input's array starts 16-byte aligned, for every dtype,
    whatever came before it in the batch (odd sizes, BYTES, empty tensors),
    on the first decode and on the cached plan's."""
    words = ("S", 13, [3], pb.serialize_byte_tensor(_WORDS).tobytes())
    reqs = []
    for r in range(nreq):
        # Each request a different rotation, so that offsets differ.
        ins = [(name, code, shape, arr.tobytes()) for name, code, shape, arr in
               _ALIGN_INPUTS[r:] + _ALIGN_INPUTS[:r]]
        if words_at is not None:
            ins.insert(words_at, words)
        reqs.append(("r%d" % r, "", ins, []))
    want = {name: arr for name, _, _, arr in _ALIGN_INPUTS}
    codec = Codec()
    for _ in range(2):  # the second decode takes the plan, unless BYTES came
        got = codec.decode_requests(request_body(reqs))
        assert len(got) == nreq
        for req in got:
            for t in req.inputs():
                arr = t.as_numpy()
                if t.name() == "S":
                    assert list(arr) == list(_WORDS)
                    continue
                assert arr.ctypes.data % 16 == 0 or not arr.nbytes, (t.name(), arr.ctypes.data % 16)
                assert np.array_equal(arr.view(want[t.name()].dtype) if t.name() == "H" else arr, want[t.name()])


def test_unaligned_data_is_not_where_the_decoder_looks():
    # A body laid out without the padding is refused (its data is not
    # where the rule puts it), rather than read askew.
    arr = np.arange(3, dtype="<i4")
    good = request_body([("", "", [("A", 2, [1], b"\x07"), ("X", 8, [3], arr.tobytes())], [])])
    (mlen,) = struct.unpack_from("<I", good, 0)
    unpadded = good[:4 + mlen] + b"\x07" + arr.tobytes()
    assert len(unpadded) != len(good)
    with pytest.raises(ValueError):
        Codec().decode_requests(bytearray(unpadded))


@pytest.mark.parametrize("base", [0, 8])
def test_output_data_is_16_byte_aligned(base):
    """encode_responses pads each in-band output's data to a multiple of 16
    from the frame body's start (base: where the reply sits in it)."""
    outs = [pb.Tensor("A", np.arange(3, dtype=np.int8)), pb.Tensor("S", _WORDS),
            pb.Tensor("B", np.arange(5, dtype=np.float64)), pb.Tensor("E", np.zeros(0, dtype=np.float32)),
            pb.Tensor("C", np.arange(16, dtype=np.int32))]
    resps = [pb.InferenceResponse(outs), pb.InferenceResponse(error=pb.TritonError("no")), pb.InferenceResponse(outs[::-1])]
    reqs = [pb.InferenceRequest._incoming([], "", [], None) for _ in resps]
    parts = Codec().encode_responses(resps, reqs, base=base)
    body = bytes(base) + b"".join(bytes(p) for p in parts)
    (mlen,) = struct.unpack_from("<I", body, base)
    p, data = base + 8, base + 4 + mlen
    seen = 0
    for _ in range(3):
        status, a, b = struct.unpack_from("<BII", body, p)
        p += 9
        if status:
            p += a + b
            continue
        for _ in range(b):
            nlen, code, ndim = struct.unpack_from("<IBB", body, p)
            p += 6 + nlen
            *shape, nbytes = struct.unpack_from("<%dqQ" % ndim, body, p)
            p += 8 * ndim + 8
            if nbytes:
                assert not any(body[data:data + (-data % 16)])
                data += -data % 16
                assert data % 16 == 0
                seen += 1
            data += nbytes
    assert seen == 8 and data == len(body)
