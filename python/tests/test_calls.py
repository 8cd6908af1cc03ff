"""BLS call frames: the request a model builds is encoded as the EXECUTE
codec reads it, and BLS_RESPONSE bodies decode to responses, also when the
layout caches (one request or response after another with the same layout)
are in play."""

import fcntl
import gc
import json
import os
import struct

import numpy as np
import pytest

import triton_python_backend_utils as pb
from vigil_stub.calls import Calls
from vigil_stub.tensors import Codec
from vigil_stub.wire import FrameBody


class FakeConn:
    def __init__(self, passes_fds=False):
        self.sent = []
        self.fds = []
        self.passes_fds = passes_fds

    def send(self, kind, flags, seq, parts=(), fds=()):
        self.sent.append(b"".join(bytes(p) for p in parts))
        self.fds.append(list(fds))  # closed by the test, as send closes them
        return True


class FakeDemux:
    def __init__(self):
        self.replies = []

    def expect(self, seq):
        pass

    def forget(self, seq):
        pass

    def next_reply(self, seq):
        return (9, 1, seq, self.replies.pop(0))


def calls():
    c = Calls(FakeConn(), FakeDemux(), Codec())
    c.live = True
    return c


def record(name, code, shape, nbytes):
    n = name.encode()
    return struct.pack("<IBB", len(n), code, len(shape)) + n + struct.pack("<%dqQ" % len(shape), *shape, nbytes)


def response_body(outputs, params=b"", final=True):
    """A BLS_RESPONSE body with one response: outputs are (name, code,
    array), each's data 16-byte aligned in the body, as the server sends it."""
    meta = struct.pack("<I", 1) + struct.pack("<BII", 0, len(params), len(outputs)) + params
    data = []
    for name, code, arr in outputs:
        raw = arr.tobytes()
        meta += record(name, code, arr.shape, len(raw))
        data.append(raw)
    body = bytearray(struct.pack("<II", 1 if final else 0, len(meta)) + meta)
    for raw in data:
        if raw:
            body += bytes(-len(body) % 16) + raw
    return body


def error_body(msg, code):
    m, c = msg.encode(), code.encode()
    meta = struct.pack("<I", 1) + struct.pack("<BII", 1, len(m), len(c)) + m + c
    return bytearray(struct.pack("<II", 1, len(meta)) + meta)


def unsealed_copy(fd):
    """A writable copy of a sealed call file (closing fd): the EXECUTE codec
    maps descriptor 0 as its input arena, read-write."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    os.close(fd)
    copy = os.memfd_create("copy")
    os.write(copy, data)
    return copy


def sent_request(c):
    """The last BLS_INFER: (model, version, timeout µs, parent, decoupled, request)."""
    body = FrameBody(c._conn.sent[-1])
    body.fds, body.out_region, body.regions = c._conn.fds[-1], None, False
    (hlen,) = struct.unpack_from("<I", body, 0)
    p = 4
    (n,) = struct.unpack_from("<I", body, p)
    model = bytes(body[p + 4:p + 4 + n]).decode()
    p += 4 + n
    (n,) = struct.unpack_from("<I", body, p)
    version = bytes(body[p + 4:p + 4 + n]).decode()
    p += 4 + n
    timeout, parent, decoupled = struct.unpack_from("<QIB", body, p)
    assert p + 13 == 4 + hlen
    rest = FrameBody(body[4 + hlen:])
    rest.fds, rest.out_region, rest.regions = [unsealed_copy(fd) for fd in body.fds], None, False
    [req] = Codec().decode_requests(rest, 4 + hlen)
    return model, version, timeout, parent, decoupled, req


def test_requests_with_one_layout_carry_their_own_values():
    c = calls()
    for i, (rid, corr, flags) in enumerate([("a", 7, 1), ("b", 7, 1), ("", "s", 2)]):
        x = np.arange(4, dtype=np.float32) + i
        y = np.full((2, 2), i, dtype=np.int64)
        c._demux.replies.append(response_body([]))
        c.infer(pb.InferenceRequest(model_name="target", model_version=3, inputs=[pb.Tensor("X", x), pb.Tensor("Y", y)],
                                    requested_output_names=["O1", "O2", "O1"], request_id=rid, correlation_id=corr,
                                    flags=flags, timeout=1500, parameters={"k": i}), parent=9)
        model, version, timeout, parent, decoupled, req = sent_request(c)
        assert (model, version, timeout, parent, decoupled) == ("target", "3", 1500, 9, 0)
        assert req.request_id() == rid and req.correlation_id() == corr and req.flags() == flags
        assert json.loads(req.parameters()) == {"k": i}
        assert req.requested_output_names() == ["O1", "O2"]
        got = {t.name(): t.as_numpy() for t in req.inputs()}
        assert np.array_equal(got["X"], x) and got["X"].dtype == np.float32
        assert np.array_equal(got["Y"], y) and got["Y"].shape == (2, 2)
    # Another model and another layout use their own cached bytes.
    c._demux.replies.append(response_body([]))
    c.infer(pb.InferenceRequest(model_name="other", inputs=[pb.Tensor("Z", np.array([b"ab", b""], dtype=np.object_))],
                                requested_output_names=[]))
    model, version, _, _, _, req = sent_request(c)
    assert (model, version) == ("other", "")
    assert [bytes(v) for v in req.inputs()[0].as_numpy()] == [b"ab", b""]


def test_responses_with_one_layout_decode_their_own_values():
    c = calls()
    for i in range(3):
        a = np.arange(6, dtype=np.float32).reshape(2, 3) * (i + 1)
        b = np.array([i, -i], dtype=np.int32)
        c._demux.replies.append(response_body([("A", 11, a), ("B", 8, b)], params=b'{"n": %d}' % i))
        resp = c.infer(pb.InferenceRequest(model_name="m", inputs=[], requested_output_names=[]))
        assert not resp.has_error()
        got = {t.name(): t for t in resp.output_tensors()}
        assert np.array_equal(got["A"].as_numpy(), a) and got["A"].as_numpy().dtype == np.float32
        assert np.array_equal(got["B"].as_numpy(), b) and got["B"].as_numpy().dtype == np.int32
        assert json.loads(resp.parameters()) == {"n": i}
    for msg in ("first", "second"):
        c._demux.replies.append(error_body(msg, "NOT_FOUND"))
        resp = c.infer(pb.InferenceRequest(model_name="m", inputs=[], requested_output_names=[]))
        assert resp.has_error() and resp.error().message() == msg
        assert resp.error().code() == pb.TritonError.NOT_FOUND


def test_caches_stay_bounded():
    c = calls()
    for n in range(1, 200):
        c._demux.replies.append(response_body([("A", 8, np.zeros(n, dtype=np.int32))]))
        resp = c.infer(pb.InferenceRequest(model_name="m%d" % n, inputs=[pb.Tensor("X", np.zeros(n, dtype=np.int32))],
                                           requested_output_names=[]))
        assert resp.output_tensors()[0].as_numpy().shape == (n,)
    assert len(c._call_heads) <= 64 and len(c._request_metas) <= 64 and len(c._response_plans) <= 64


def test_large_inputs_travel_in_one_sealed_memory_file():
    c = Calls(FakeConn(passes_fds=True), FakeDemux(), Codec(shm_threshold=1024))
    c.live = True
    big1 = np.arange(1000, dtype=np.float32)
    big2 = np.arange(300, dtype=np.int64).reshape(3, 100)
    small = np.arange(4, dtype=np.int32)
    c._demux.replies.append(response_body([]))
    c.infer(pb.InferenceRequest(model_name="m", inputs=[pb.Tensor("A", big1), pb.Tensor("S", small), pb.Tensor("B", big2)],
                                requested_output_names=[]))
    [fd] = c._conn.fds[-1]
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
    # Only the small input is in the frame.
    assert big1.tobytes() not in c._conn.sent[-1] and small.tobytes() in c._conn.sent[-1]
    *_, req = sent_request(c)
    got = {t.name(): t.as_numpy() for t in req.inputs()}
    assert np.array_equal(got["A"], big1) and np.array_equal(got["B"], big2) and np.array_equal(got["S"], small)
    # Without descriptor passing every input is in the frame.
    c = Calls(FakeConn(), FakeDemux(), Codec(shm_threshold=1024))
    c.live = True
    c._demux.replies.append(response_body([]))
    c.infer(pb.InferenceRequest(model_name="m", inputs=[pb.Tensor("A", big1)], requested_output_names=[]))
    assert c._conn.fds[-1] == [] and big1.tobytes() in c._conn.sent[-1]


def file_response_body(outputs, fds):
    """A BLS_RESPONSE body with one response whose outputs (name, code,
    shape, nbytes, descriptor index, offset) are in descriptors fds."""
    meta = struct.pack("<I", 1) + struct.pack("<BII", 0, 0, len(outputs))
    for name, code, shape, nbytes, idx, off in outputs:
        meta += record(name, code | 0x80, shape, nbytes) + struct.pack("<IQ", idx, off)
    body = FrameBody(struct.pack("<II", 1, len(meta)) + meta)
    body.fds, body.out_region, body.regions = fds, None, False
    return body


def mapped(name):
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "/memfd:%s " % name in line)


def test_large_outputs_are_read_only_views_of_the_files_that_came():
    a = np.arange(1000, dtype=np.float32)
    b = np.arange(64, dtype=np.int64).reshape(8, 8)
    fd = os.memfd_create("vigil-test-out")
    os.pwrite(fd, a.tobytes(), 0)
    os.pwrite(fd, b.tobytes(), 4032)
    c = calls()
    for _ in range(2):  # the second through the cached plan
        fd2 = os.dup(fd)
        c._demux.replies.append(file_response_body([("A", 11, (1000,), 4000, 0, 0), ("B", 9, (8, 8), 512, 0, 4032)], [fd2]))
        resp = c.infer(pb.InferenceRequest(model_name="m", inputs=[], requested_output_names=[]))
        assert not resp.has_error()
        got = {t.name(): t.as_numpy() for t in resp.output_tensors()}
        assert np.array_equal(got["A"], a) and np.array_equal(got["B"], b) and got["B"].dtype == np.int64
        assert not got["A"].flags.writeable and not got["B"].flags.writeable
        with pytest.raises(OSError):
            os.fstat(fd2)  # the descriptor was closed once mapped
        assert mapped("vigil-test-out") == 1
        # The mapping goes with the arrays.
        del resp, got
        gc.collect()
        assert mapped("vigil-test-out") == 0
    # An output past the file's end is an error, not a fault.
    c._demux.replies.append(file_response_body([("A", 11, (1000,), 4000, 0, 8192)], [os.dup(fd)]))
    with pytest.raises(pb.TritonModelException, match="overrun"):
        c.infer(pb.InferenceRequest(model_name="m", inputs=[], requested_output_names=[]))
    c._demux.replies.append(file_response_body([("A", 11, (1000,), 4000, 1, 0)], [os.dup(fd)]))
    with pytest.raises(pb.TritonModelException, match="descriptor 1, 1 came"):
        c.infer(pb.InferenceRequest(model_name="m", inputs=[], requested_output_names=[]))
    os.close(fd)


def test_call_data_is_16_byte_aligned_both_ways():
    """A BLS_INFER's in-band inputs start 16-byte aligned in the frame
    body (after the call header), and a BLS_RESPONSE's outputs decode to
    aligned arrays."""
    c = calls()
    ins = [pb.Tensor("A", np.arange(3, dtype=np.int8)), pb.Tensor("S", np.array([b"xy"], dtype=object)),
           pb.Tensor("B", np.arange(5, dtype=np.float64)), pb.Tensor("C", np.arange(16, dtype=np.int32))]
    for model in ("m", "a-longer-model-name"):
        c._demux.replies.append(response_body([("X", 6, np.arange(3, dtype=np.int8)), ("Y", 9, np.arange(5, dtype=np.int64)),
                                               ("Z", 8, np.arange(16, dtype=np.int32).reshape(1, 16))]))
        resp = c.infer(pb.InferenceRequest(model_name=model, inputs=ins, requested_output_names=[]))
        for t in resp.output_tensors():
            assert t.as_numpy().ctypes.data % 16 == 0, t.name()
        *_, req = sent_request(c)
        got = {t.name(): t.as_numpy() for t in req.inputs()}
        assert np.array_equal(got["B"], ins[2].as_numpy()) and np.array_equal(got["C"], ins[3].as_numpy())
        body = c._conn.sent[-1]
        for name in ("A", "B", "C"):
            raw = [t for t in ins if t.name() == name][0].as_numpy().tobytes()
            assert body.index(raw) % 16 == 0, name
