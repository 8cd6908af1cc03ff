"""Decoupled models over gRPC ModelStreamInfer, with the stock clients:
tritonclient.grpc start_stream / async_stream_infer (the checks Triton's own
repeat_client.py and square_client.py make), tritonclient.grpc.aio
stream_infer, and grpcurl. The models are examples/models/repeat_int32 and
square_int32, written as Triton's decoupled examples are."""

import asyncio
import json
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpc
from tritonclient.utils import InferenceServerException

from vigil_testlib import CALL_TIMEOUT_S, GRPCStream, http_request


@pytest.fixture
def stream(server):
    s = GRPCStream(server)
    yield s
    s.close()


def repeat_inputs(values, delays, wait):
    ins = [grpcclient.InferInput("IN", [len(values)], "INT32"),
           grpcclient.InferInput("DELAY", [len(delays)], "UINT32"),
           grpcclient.InferInput("WAIT", [1], "UINT32")]
    ins[0].set_data_from_numpy(np.array(values, dtype=np.int32))
    ins[1].set_data_from_numpy(np.array(delays, dtype=np.uint32))
    ins[2].set_data_from_numpy(np.array([wait], dtype=np.uint32))
    return ins


def square_input(n):
    i = grpcclient.InferInput("IN", [1], "INT32")
    i.set_data_from_numpy(np.array([n], dtype=np.int32))
    return [i]


def final_flag(result):
    return result.get_response(as_json=True)["parameters"]["triton_final_response"]["bool_param"]


def test_repeat_int32_client(stream):
    # What repeat_client.py does: IN [4,2,0,1], 4 callbacks, OUT in order.
    in_values = [4, 2, 0, 1]
    stream.client.async_stream_infer(
        "repeat_int32", repeat_inputs(in_values, [1, 2, 3, 4], 5), request_id="0",
        outputs=[grpcclient.InferRequestedOutput("OUT"), grpcclient.InferRequestedOutput("IDX")])
    got = []
    for _ in in_values:
        result, error = stream.get()
        assert error is None, error
        assert result.get_response().id == "0"
        got.append(result)
    assert [int(r.as_numpy("OUT")[0]) for r in got] == in_values
    assert [int(r.as_numpy("IDX")[0]) for r in got] == [0, 1, 2, 3]
    assert all(r.as_numpy("IDX").dtype == np.uint32 for r in got)
    assert [final_flag(r) for r in got] == [False] * 4
    # The flag-only FINAL is not delivered unless asked for.
    assert stream.none_within(0.5)


def test_square_int32_client(stream):
    # What square_client.py does: 4 requests, sum(IN) callbacks, per-id counts.
    in_values = [4, 2, 0, 1]
    for i, n in enumerate(in_values):
        stream.client.async_stream_infer("square_int32", square_input(n), request_id=str(i))
    counts = {}
    for _ in range(sum(in_values)):
        result, error = stream.get()
        assert error is None, error
        rid = result.get_response().id
        counts[rid] = counts.get(rid, 0) + 1
        assert int(result.as_numpy("OUT")[0]) == in_values[int(rid)]
        assert result.as_numpy("OUT").dtype == np.int32
    assert counts == {"0": 4, "1": 2, "3": 1}
    assert stream.none_within(0.5)


def test_empty_final_response(stream):
    stream.client.async_stream_infer("repeat_int32", repeat_inputs([7, 8], [0, 0], 0), request_id="e",
                                     enable_empty_final_response=True)
    results = []
    while True:
        result, error = stream.get()
        assert error is None, error
        results.append(result)
        if final_flag(result):
            break
    assert [int(r.as_numpy("OUT")[0]) for r in results[:-1]] == [7, 8]
    last = results[-1].get_response()
    assert last.id == "e" and last.model_name == "repeat_int32" and len(last.outputs) == 0
    # Zero responses plus FINAL: only the empty final response.
    stream.client.async_stream_infer("square_int32", square_input(0), request_id="z",
                                     enable_empty_final_response=True)
    result, error = stream.get()
    assert error is None and result.get_response().id == "z" and final_flag(result)
    assert len(result.get_response().outputs) == 0


def test_errors_are_stream_messages_and_the_stream_stays_usable(stream):
    # IN and DELAY shapes differ: the model raises; the error arrives on the stream.
    stream.client.async_stream_infer("repeat_int32", repeat_inputs([1, 2], [1], 0), request_id="bad")
    result, error = stream.get()
    assert result is None
    assert isinstance(error, InferenceServerException)
    assert "expected IN and DELAY shape to match, got [2] and [1]." in error.message()
    stream.client.async_stream_infer("no_such_model", square_input(1), request_id="nf")
    _, error = stream.get()
    assert "no_such_model" in error.message()
    # The same stream serves the next request.
    stream.client.async_stream_infer("square_int32", square_input(2), request_id="ok")
    for _ in range(2):
        result, error = stream.get()
        assert error is None and result.get_response().id == "ok"


def test_unary_endpoints_refuse_decoupled_models(server):
    c = server.grpc_client()
    try:
        with pytest.raises(InferenceServerException) as ei:
            c.infer("square_int32", square_input(1))
        assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in ei.value.message()
        assert ei.value.status() == "StatusCode.UNIMPLEMENTED"
    finally:
        c.close()
    body = json.dumps({"inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]}]}).encode()
    status, raw, _ = http_request(server.http_addr, "POST", "/v2/models/square_int32/infer", body,
                                  {"Content-Type": "application/json"})
    assert status == 501
    assert "HTTP end point doesn't support models with decoupled transaction policy" in json.loads(raw)["error"]


def test_default_model_on_a_stream_has_final_flag(stream):
    a = np.ones((1, 16), np.float32)
    ins = [grpcclient.InferInput("INPUT0", [1, 16], "FP32"), grpcclient.InferInput("INPUT1", [1, 16], "FP32")]
    ins[0].set_data_from_numpy(a)
    ins[1].set_data_from_numpy(a)
    stream.client.async_stream_infer("add_sub", ins, request_id="d")
    result, error = stream.get()
    assert error is None and final_flag(result) is True


def test_aio_stream_infer(server):
    async def main():
        c = aiogrpc.InferenceServerClient(server.grpc_addr)

        async def requests():
            for i, n in enumerate([3, 1]):
                yield {"model_name": "square_int32", "inputs": square_input(n), "request_id": str(i)}
            # The aio client has no enable_empty_final_response (and refuses
            # triton_ parameters), so no final response is delivered.
            yield {"model_name": "repeat_int32", "inputs": repeat_inputs([5, 6], [1, 1], 0), "request_id": "r"}

        got = {}
        try:
            async for result, error in c.stream_infer(requests(), stream_timeout=CALL_TIMEOUT_S):
                assert error is None, error
                r = result.get_response()
                got.setdefault(r.id, []).append(result)
                if {k: len(v) for k, v in got.items()} == {"0": 3, "1": 1, "r": 2}:
                    break
        finally:
            await c.close()
        return got

    got = asyncio.run(asyncio.wait_for(main(), CALL_TIMEOUT_S))
    assert [int(r.as_numpy("OUT")[0]) for r in got["0"]] == [3, 3, 3]
    assert [int(r.as_numpy("OUT")[0]) for r in got["1"]] == [1]
    assert [int(r.as_numpy("OUT")[0]) for r in got["r"]] == [5, 6]
    assert [final_flag(r) for r in got["r"]] == [False, False]


def test_grpcurl_model_stream_infer(grpcurl, server):
    req = {"model_name": "square_int32", "id": "g",
           "inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "contents": {"int_contents": [3]}}],
           "parameters": {"triton_enable_empty_final_response": {"bool_param": True}}}
    res = subprocess.run([*grpcurl, "-plaintext", "-max-time", "20", "-d", json.dumps(req), server.grpc_addr,
                          "inference.GRPCInferenceService/ModelStreamInfer"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    msgs, text, dec = [], res.stdout.strip(), json.JSONDecoder()
    while text:
        msg, end = dec.raw_decode(text)
        msgs.append(msg)
        text = text[end:].strip()
    assert len(msgs) == 4, res.stdout
    finals = [m["inferResponse"]["parameters"]["triton_final_response"]["boolParam"] for m in msgs]
    assert finals == [False, False, False, True]
    assert all(m["inferResponse"]["id"] == "g" for m in msgs)
    assert all(len(m["inferResponse"].get("rawOutputContents", [])) == 1 for m in msgs[:3])
    assert "outputs" not in msgs[3]["inferResponse"]
