"""gRPC ModelStreamInfer through tritonclient.grpc start_stream/async_stream_infer."""

import numpy as np
import pytest

from vigil_testlib import GRPCStream


@pytest.fixture
def stream(server):
    s = GRPCStream(server)
    yield s
    s.close()


def inputs(proto, a, b):
    return [proto.input("INPUT0", a), proto.input("INPUT1", b)]


def test_stream_responses_match_ids(stream, grpc_proto):
    expect = {}
    for k in range(8):
        a = np.full((1 + k % 3, 16), k, np.float32)
        b = np.arange(16, dtype=np.float32)[None, :].repeat(a.shape[0], axis=0)
        expect[f"s{k}"] = (a, b)
        stream.send("add_sub", inputs(grpc_proto, a, b), f"s{k}")
    got = {}
    for result, error in stream.collect(len(expect)):
        assert error is None, error
        rid = result.get_response().id
        assert rid not in got, f"duplicate response for {rid}"
        got[rid] = result
    assert set(got) == set(expect)
    for rid, (a, b) in expect.items():
        np.testing.assert_array_equal(got[rid].as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(got[rid].as_numpy("OUTPUT1"), a - b)
    assert stream.q.empty()


def test_stream_error_then_keeps_working(stream, grpc_proto):
    a = np.ones((1, 16), np.float32)
    stream.send("add_sub", inputs(grpc_proto, a, a), "ok-1")
    stream.send("add_sub", [grpc_proto.input("INPUT0", a.astype(np.int32)),
                            grpc_proto.input("INPUT1", a)], "bad-dtype")
    stream.send("no_such_model", inputs(grpc_proto, a, a), "bad-model")
    stream.send("add_sub", inputs(grpc_proto, 2 * a, a), "ok-2")

    results = stream.collect(4)
    errors = [e for r, e in results if e is not None]
    oks = {r.get_response().id: r for r, e in results if e is None}
    assert set(oks) == {"ok-1", "ok-2"}
    np.testing.assert_array_equal(oks["ok-2"].as_numpy("OUTPUT0"), 3 * a)
    messages = sorted(e.message() for e in errors)
    assert len(messages) == 2, messages
    assert any("INPUT0" in m and "INT32" in m for m in messages), messages
    assert any("no_such_model" in m for m in messages), messages

    # The stream is still usable after the errors.
    stream.send("add_sub", inputs(grpc_proto, a, a), "ok-3")
    result, error = stream.get()
    assert error is None, error
    assert result.get_response().id == "ok-3"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros_like(a))


def test_stream_identity_bytes(stream, grpc_proto):
    arr = np.array([b"", "\u00fc\u00f1\u00ee".encode(), b"\x00"], dtype=np.object_)
    stream.send("identity", [grpc_proto.input("INPUT_BYTES", arr)], "bytes")
    result, error = stream.get()
    assert error is None, error
    assert list(result.as_numpy("OUTPUT_BYTES")) == list(arr)
