"""Inference through tritonclient over HTTP (binary and JSON tensors) and gRPC."""

import numpy as np
import pytest

from vigil_testlib import CALL_TIMEOUT_S, as_bytes_array, error_of


def add_sub_inputs(proto, a, b, binary=True):
    return [proto.input("INPUT0", a, binary=binary), proto.input("INPUT1", b, binary=binary)]


def batch(n=3, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 16)).astype(np.float32)
    b = rng.standard_normal((n, 16)).astype(np.float32)
    return a, b


# -- add_sub ---------------------------------------------------------------------


def test_add_sub_binary(proto):
    a, b = batch(3, seed=1)
    res = proto.infer("add_sub", add_sub_inputs(proto, a, b),
                      outputs=[proto.output("OUTPUT0"), proto.output("OUTPUT1")])
    out0, out1 = res.as_numpy("OUTPUT0"), res.as_numpy("OUTPUT1")
    assert out0.dtype == np.float32 and out0.shape == (3, 16)
    assert out1.dtype == np.float32 and out1.shape == (3, 16)
    np.testing.assert_array_equal(out0, a + b)
    np.testing.assert_array_equal(out1, a - b)


def test_add_sub_default_outputs(proto):
    # No requested outputs: every output comes back.
    a, b = batch(1, seed=2)
    res = proto.infer("add_sub", add_sub_inputs(proto, a, b))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_add_sub_json_outputs_http(http_proto):
    a, b = batch(3, seed=3)
    res = http_proto.infer("add_sub", add_sub_inputs(http_proto, a, b),
                           outputs=[http_proto.output("OUTPUT0", binary=False),
                                    http_proto.output("OUTPUT1", binary=False)])
    for name in ("OUTPUT0", "OUTPUT1"):
        out = res.get_output(name)
        assert "data" in out, out  # JSON, not binary
        assert out["shape"] == [3, 16]
        assert out["datatype"] == "FP32"
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_add_sub_all_json_http(http_proto):
    # JSON inputs and JSON outputs: a plain-JSON request and response.
    a, b = batch(3, seed=4)
    res = http_proto.infer("add_sub", add_sub_inputs(http_proto, a, b, binary=False),
                           outputs=[http_proto.output("OUTPUT0", binary=False),
                                    http_proto.output("OUTPUT1", binary=False)])
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_add_sub_mixed_binary_json_http(http_proto):
    a, b = batch(2, seed=5)
    inputs = [http_proto.input("INPUT0", a, binary=True), http_proto.input("INPUT1", b, binary=False)]
    res = http_proto.infer("add_sub", inputs,
                           outputs=[http_proto.output("OUTPUT0", binary=False),
                                    http_proto.output("OUTPUT1", binary=True)])
    assert "data" in res.get_output("OUTPUT0")
    assert "data" not in res.get_output("OUTPUT1")
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_add_sub_requested_output_subset(proto):
    a, b = batch(1, seed=6)
    res = proto.infer("add_sub", add_sub_inputs(proto, a, b), outputs=[proto.output("OUTPUT1")])
    assert res.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_add_sub_request_id_and_version(proto):
    a, b = batch(1, seed=7)
    res = proto.infer("add_sub", add_sub_inputs(proto, a, b), request_id="req-42",
                      model_version="1")
    assert proto.response_id(res) == "req-42"
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)


@pytest.mark.parametrize("n", [1, 8])
def test_add_sub_batch_bounds(proto, n):
    a, b = batch(n, seed=8)
    res = proto.infer("add_sub", add_sub_inputs(proto, a, b))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)


def test_add_sub_parameters_accepted(proto):
    a, b = batch(1, seed=9)
    res = proto.infer("add_sub", add_sub_inputs(proto, a, b),
                      parameters={"note": "x", "n": 3, "flag": True})
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("alg", ["gzip", "deflate"])
def test_http_compressed_request_and_response(http_proto, alg):
    a, b = batch(2, seed=10)
    res = http_proto.client.infer("add_sub", add_sub_inputs(http_proto, a, b),
                                  request_compression_algorithm=alg,
                                  response_compression_algorithm=alg)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)


@pytest.mark.parametrize("alg", ["gzip", "deflate"])
def test_grpc_compressed_request(grpc_proto, alg):
    a, b = batch(2, seed=11)
    try:
        res = grpc_proto.client.infer("add_sub", add_sub_inputs(grpc_proto, a, b),
                                      compression_algorithm=alg, client_timeout=CALL_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - turned into the assertion the bug is about
        raise AssertionError(f"gRPC infer with compression {alg} failed: {e}") from None
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)


def test_health_hook_model(proto):
    x = np.array([0.5, -1.0, 3.0], np.float32)
    res = proto.infer("health_hook", [proto.input("INPUT0", x)])
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), 2 * x)


# -- identity: every datatype round trips ---------------------------------------

IDENTITY_DATA = {
    "FP32": np.array([1.5, -2.25, 0.0, 3.0e38, -1.0e-38], np.float32),
    "FP16": np.array([1.5, -2.25, 0.0, 65504.0, 6.1e-5], np.float16),
    "INT32": np.array([0, -1, 2**31 - 1, -(2**31)], np.int32),
    "INT64": np.array([0, -1, 2**63 - 1, -(2**63), 2**53 + 1], np.int64),
    "UINT8": np.array([0, 1, 127, 128, 255], np.uint8),
    "BOOL": np.array([True, False, True, True], np.bool_),
    "BYTES": np.array([b"hello", b"", "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c".encode("utf-8"),
                       b"tab\tnl\n", b""], dtype=np.object_),
}

# (protocol, binary) variants: HTTP binary tensors, HTTP JSON tensors, gRPC raw.
VARIANTS = [("http", True), ("http", False), ("grpc", True)]


def check_identity(res, suffix, arr):
    out = res.as_numpy("OUTPUT_" + suffix)
    assert out is not None, f"OUTPUT_{suffix} missing"
    assert out.shape == arr.shape
    if suffix == "BYTES":
        assert out.dtype == np.object_
        assert as_bytes_array(out) == list(arr)
    else:
        assert out.dtype == arr.dtype
        np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("suffix", list(IDENTITY_DATA))
@pytest.mark.parametrize("protocol,binary", VARIANTS, ids=["http-binary", "http-json", "grpc"])
def test_identity_round_trip(request, protocol, binary, suffix):
    proto = request.getfixturevalue(f"{protocol}_proto")
    arr = IDENTITY_DATA[suffix]
    res = proto.infer("identity", [proto.input("INPUT_" + suffix, arr, binary=binary)],
                      outputs=[proto.output("OUTPUT_" + suffix, binary=binary)])
    check_identity(res, suffix, arr)
    # Only the outputs of the given inputs come back.
    assert [o for o in IDENTITY_DATA if o != suffix and res.as_numpy("OUTPUT_" + o) is not None] == []


def test_identity_bytes_arbitrary_binary(proto):
    # Non-UTF-8 bytes and NULs survive a binary round trip.
    arr = np.array([b"\x00\xff\xfe", b"a\x00b", bytes(range(256))], dtype=np.object_)
    res = proto.infer("identity", [proto.input("INPUT_BYTES", arr)])
    assert as_bytes_array(res.as_numpy("OUTPUT_BYTES")) == list(arr)


def test_identity_bytes_non_utf8_as_json_is_400(http_proto):
    # Documented: a BYTES output that is not valid UTF-8 cannot be JSON; 400 naming it.
    arr = np.array([b"\xff\xfe"], dtype=np.object_)
    err = error_of(http_proto.infer, "identity", [http_proto.input("INPUT_BYTES", arr)],
                   outputs=[http_proto.output("OUTPUT_BYTES", binary=False)])
    assert str(err.status()) == "400"
    assert "OUTPUT_BYTES" in err.message()


def test_identity_all_types_in_one_request(proto):
    inputs = [proto.input("INPUT_" + s, a) for s, a in IDENTITY_DATA.items()]
    res = proto.infer("identity", inputs)
    for s, a in IDENTITY_DATA.items():
        check_identity(res, s, a)


def test_identity_empty_tensor(proto):
    arr = np.zeros((0,), np.float32)
    res = proto.infer("identity", [proto.input("INPUT_FP32", arr)])
    out = res.as_numpy("OUTPUT_FP32")
    assert out.shape == (0,)


def test_identity_non_finite_fp32_json_input(http_proto):
    arr = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    try:
        res = http_proto.infer("identity", [http_proto.input("INPUT_FP32", arr, binary=False)],
                               outputs=[http_proto.output("OUTPUT_FP32", binary=False)])
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"JSON input with NaN/Infinity refused: {e}") from None
    np.testing.assert_array_equal(res.as_numpy("OUTPUT_FP32"), arr)


def test_identity_non_finite_fp32_binary_input_json_output(http_proto):
    # Binary in, JSON out: responses use "NaN"/"Infinity" strings that numpy parses.
    arr = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    res = http_proto.infer("identity", [http_proto.input("INPUT_FP32", arr, binary=True)],
                           outputs=[http_proto.output("OUTPUT_FP32", binary=False)])
    np.testing.assert_array_equal(res.as_numpy("OUTPUT_FP32"), arr)


# -- bad requests ----------------------------------------------------------------


def expect_error(proto, kind, model, inputs, *culprits, outputs=None, **kw):
    err = error_of(proto.infer, model, inputs, outputs=outputs, **kw)
    assert str(err.status()) == proto.status(kind), (err.status(), err.message())
    for c in culprits:
        assert c in err.message(), (c, err.message())
    return err


def test_bad_datatype(proto):
    a, b = batch(1)
    expect_error(proto, "invalid", "add_sub",
                 [proto.input("INPUT0", a.astype(np.int32)), proto.input("INPUT1", b)],
                 "INPUT0", "INT32", "FP32")


def test_bad_shape(proto):
    a = np.zeros((3, 15), np.float32)
    b = np.zeros((3, 16), np.float32)
    expect_error(proto, "invalid", "add_sub", add_sub_inputs(proto, a, b), "INPUT0", "add_sub")


def test_batch_over_max(proto):
    a, b = batch(9)
    expect_error(proto, "invalid", "add_sub", add_sub_inputs(proto, a, b), "INPUT0", "8")


def test_batch_sizes_disagree(proto):
    a, _ = batch(3)
    _, b = batch(2)
    expect_error(proto, "invalid", "add_sub", add_sub_inputs(proto, a, b), "INPUT1")


def test_missing_input(proto):
    a, _ = batch(1)
    expect_error(proto, "invalid", "add_sub", [proto.input("INPUT0", a)], "INPUT1")


def test_unknown_input(proto):
    a, b = batch(1)
    expect_error(proto, "invalid", "add_sub",
                 add_sub_inputs(proto, a, b) + [proto.input("BOGUS", b)], "BOGUS")


def test_unknown_requested_output(proto):
    a, b = batch(1)
    expect_error(proto, "invalid", "add_sub", add_sub_inputs(proto, a, b), "NOPE_OUT",
                 outputs=[proto.output("NOPE_OUT")])


def test_unknown_model(proto):
    a, b = batch(1)
    expect_error(proto, "not_found", "no_such_model", add_sub_inputs(proto, a, b),
                 "no_such_model")


def test_unknown_version(proto):
    a, b = batch(1)
    expect_error(proto, "not_found", "add_sub", add_sub_inputs(proto, a, b), "7",
                 model_version="7")


def test_data_size_disagrees_with_shape(proto):
    # The declared shape says 17 elements per row, the data holds 16.
    a, b = batch(1)
    inp = proto.input("INPUT0", a)
    if proto.is_http:
        inp._shape = [1, 17]
    else:
        inp._input.shape[:] = [1, 17]
    expect_error(proto, "invalid", "add_sub", [inp, proto.input("INPUT1", b)], "INPUT0")


def test_server_still_serves_after_errors(proto):
    a, b = batch(1)
    error_of(proto.infer, "add_sub", [proto.input("INPUT0", a)])
    res = proto.infer("add_sub", add_sub_inputs(proto, a, b))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    assert proto.client.is_server_ready() is True


# -- async ---------------------------------------------------------------------------


def test_async_infer_http(http_proto):
    handles = []
    expect = []
    for k in range(5):
        a, b = batch(1 + k % 3, seed=100 + k)
        expect.append((a, b))
        handles.append(http_proto.client.async_infer(
            "add_sub", add_sub_inputs(http_proto, a, b), request_id=f"h{k}"))
    for k, h in enumerate(handles):
        res = h.get_result(timeout=CALL_TIMEOUT_S)
        a, b = expect[k]
        assert res.get_response()["id"] == f"h{k}"
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_async_infer_http_error(http_proto):
    a, _ = batch(1)
    h = http_proto.client.async_infer("add_sub", [http_proto.input("INPUT0", a)])
    err = error_of(h.get_result, timeout=CALL_TIMEOUT_S)
    assert str(err.status()) == "400"
    assert "INPUT1" in err.message()


def test_async_infer_grpc(grpc_proto):
    import queue

    done = queue.Queue()
    expect = {}
    for k in range(5):
        a, b = batch(1 + k % 3, seed=200 + k)
        expect[f"g{k}"] = (a, b)
        grpc_proto.client.async_infer(
            "add_sub", add_sub_inputs(grpc_proto, a, b), request_id=f"g{k}",
            callback=lambda result, error: done.put((result, error)),
            client_timeout=CALL_TIMEOUT_S)
    seen = set()
    for _ in range(5):
        result, error = done.get(timeout=CALL_TIMEOUT_S)
        assert error is None, error
        rid = result.get_response().id
        a, b = expect[rid]
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        seen.add(rid)
    assert seen == set(expect)


def test_async_infer_grpc_error(grpc_proto):
    import queue

    done = queue.Queue()
    grpc_proto.client.async_infer(
        "no_such_model", [grpc_proto.input("INPUT0", batch(1)[0])],
        callback=lambda result, error: done.put((result, error)), client_timeout=CALL_TIMEOUT_S)
    result, error = done.get(timeout=CALL_TIMEOUT_S)
    assert result is None
    assert str(error.status()) == "StatusCode.NOT_FOUND"
    assert "no_such_model" in error.message()
