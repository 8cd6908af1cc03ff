"""Ensembles (platform "ensemble", ensemble_scheduling steps) and readiness
that follows dependencies, over HTTP and gRPC.

The repository is tests/conformance/models/bls: "pipeline" runs two
independent "double" steps, then add_sub, then "multiply"; "parallel" runs
two independent steps of a two-instance model at once. Broken ensembles are
written into the server's copy of the repository and loaded by the test.
"""

import json
import re
import threading
import time

import grpc
import numpy as np
import pytest

from test_bls import bls_server, pair
from vigil_testlib import CALL_TIMEOUT_S, Proto, error_of, http_get, wait_until

SERVING, NOT_SERVING = 1, 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Only pipeline, parallel and the BLS model with depends_on are named:
    # the ensembles' steps load along with them (add_sub is loaded by name
    # too, so unload_dependents keeps it).
    args = ["--model-control-mode", "explicit"]
    for m in ["add_sub", "pipeline", "parallel", "bls_dep"]:
        args += ["--load-model", m]
    srv = bls_server(tmp_path_factory, "vigil-ensemble", args)
    yield srv
    srv.stop()


@pytest.fixture(params=["http", "grpc"])
def proto(request, server):
    p = Proto(request.param, server)
    yield p
    p.close()


def run_pipeline(p, a, b):
    r = p.infer("pipeline", [p.input("RAW0", a), p.input("RAW1", b)])
    return r.as_numpy("RESULT"), r.as_numpy("SUM")


def test_pipeline_runs_its_steps(proto):
    a, b = pair()
    result, total = run_pipeline(proto, a, b)
    assert np.allclose(total, 2 * a + 2 * b)
    assert np.allclose(result, (2 * a + 2 * b) * (2 * a - 2 * b))


def test_pipeline_metadata_config_and_statistics(proto):
    md = proto.client.get_model_metadata("pipeline", as_json=True) if not proto.is_http else \
        proto.client.get_model_metadata("pipeline")
    assert md["platform"] == "ensemble"
    assert [i["name"] for i in md["inputs"]] == ["RAW0", "RAW1"]
    assert [o["name"] for o in md["outputs"]] == ["RESULT", "SUM"]
    cfg = proto.client.get_model_config("pipeline", as_json=True) if not proto.is_http else \
        proto.client.get_model_config("pipeline")
    cfg = cfg.get("config", cfg)
    steps = cfg["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["double", "double", "add_sub", "multiply"]
    before = {m: proto.stats(m) for m in ("pipeline", "double", "add_sub", "multiply")}
    a, b = pair()
    run_pipeline(proto, a, b)
    after = {m: proto.stats(m) for m in before}
    assert after["pipeline"]["success"]["count"] == before["pipeline"]["success"]["count"] + 1
    assert after["double"]["success"]["count"] == before["double"]["success"]["count"] + 2
    assert after["add_sub"]["success"]["count"] == before["add_sub"]["success"]["count"] + 1
    assert after["multiply"]["success"]["count"] == before["multiply"]["success"]["count"] + 1


def test_independent_steps_run_in_parallel(server):
    p = Proto("http", server)
    a, b = pair()
    delay = 1500
    start = time.monotonic()
    r = p.infer("parallel", [p.input("X0", a), p.input("X1", b)], parameters={"delay_ms": delay})
    took = time.monotonic() - start
    assert np.allclose(r.as_numpy("S"), a + b) and np.allclose(r.as_numpy("D"), a - b)
    assert took < 2 * delay / 1000 - 0.3, f"two {delay} ms steps took {took:.2f}s: they ran one after the other"
    p.close()


BAD = {
    "bad_unknown": ('input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                    'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                    'ensemble_scheduling { step [ { model_name: "nothere" input_map { key: "INPUT" value: "X" } '
                    'output_map { key: "OUTPUT" value: "Y" } } ] }',
                    "ensemble bad_unknown contains models that are not available or ambiguous: nothere"),
    "bad_dangling": ('input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                     'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                     'ensemble_scheduling { step [ '
                     '{ model_name: "double" input_map { key: "INPUT" value: "X" } output_map { key: "OUTPUT" value: "T" } }, '
                     '{ model_name: "multiply" input_map [ { key: "A" value: "T" }, { key: "B" value: "GHOST" } ] '
                     'output_map { key: "PRODUCT" value: "Y" } } ] }',
                     "step 1 (model multiply): input 'B' is mapped to ensemble tensor 'GHOST', which is neither"),
    "bad_double": ('input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                   'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                   'ensemble_scheduling { step [ '
                   '{ model_name: "double" input_map { key: "INPUT" value: "X" } output_map { key: "OUTPUT" value: "Y" } }, '
                   '{ model_name: "double" input_map { key: "INPUT" value: "X" } output_map { key: "OUTPUT" value: "Y" } } ] }',
                   "ensemble tensor 'Y' can appear in an output map only once for ensemble 'bad_double' step 1"),
    "bad_dtype": ('input [ { name: "X" data_type: TYPE_INT32 dims: [ 4 ] } ] '
                  'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                  'ensemble_scheduling { step [ { model_name: "double" input_map { key: "INPUT" value: "X" } '
                  'output_map { key: "OUTPUT" value: "Y" } } ] }',
                  "in ensemble bad_dtype, ensemble tensor X: inconsistent data type: TYPE_INT32 is inferred from model "
                  "bad_dtype while TYPE_FP32 is inferred from model double"),
    "bad_shape": ('input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ] '
                  'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 5 ] } ] '
                  'ensemble_scheduling { step [ { model_name: "double" input_map { key: "INPUT" value: "X" } '
                  'output_map { key: "OUTPUT" value: "Y" } } ] }',
                  "in ensemble bad_shape, ensemble tensor Y: inconsistent shape: [5] is inferred from model bad_shape "
                  "while [4] is inferred from model double"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_ensembles_are_refused_naming_step_and_tensor(server, name):
    body, want = BAD[name]
    d = server.repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(f'name: "{name}"\nplatform: "ensemble"\n{body}\n')
    c = server.http_client()
    try:
        e = error_of(c.load_model, name)
        assert want in e.message(), e.message()
        assert str(e.status()) == "400"
    finally:
        c.close()


def grpc_ready(server, model):
    p = Proto("grpc", server)
    try:
        return p.client.is_model_ready(model)
    finally:
        p.close()


def test_ensemble_readiness_follows_its_steps_on_every_surface(server):
    http = server.http_client()
    ch = grpc.insecure_channel(server.grpc_addr)
    watch = ch.unary_stream("/grpc.health.v1.Health/Watch",
                            request_serializer=lambda s: b"\x0a" + bytes([len(s)]) + s.encode(),
                            response_deserializer=lambda d: d[1] if d else 0)
    stream = watch("model/pipeline", timeout=CALL_TIMEOUT_S)
    pushes = []

    def read():
        try:
            for status in stream:
                pushes.append(status)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_until(lambda: pushes[:1] == [SERVING], timeout=10, what="the first Watch message")
        assert http.is_model_ready("pipeline")
        http.unload_model("multiply")
        # Every surface says the ensemble is not ready, naming the step.
        assert http.is_model_ready("pipeline") is False
        assert grpc_ready(server, "pipeline") is False
        wait_until(lambda: NOT_SERVING in pushes, timeout=10, what="a NOT_SERVING push for model/pipeline")
        status, body = http_get(server.http_addr, "/readyz?verbose")
        line = next(l for l in body.decode().splitlines() if "model/pipeline" in l)
        assert line.startswith("[-]") and "step multiply: unloaded" in line, line
        status, body = http_get(server.http_addr, "/v2/models/pipeline/ready")
        assert status != 200
        index = {m["name"]: m for m in http.get_model_repository_index()}
        assert index["pipeline"]["state"] == "UNAVAILABLE"
        assert "step multiply" in index["pipeline"]["reason"]
        status, body = http_get(server.http_addr, "/metrics")
        assert re.search(r'vigil_model_ready\{model="pipeline",version="1"\} 0', body.decode())
        a, b = pair()
        p = Proto("http", server)
        e = error_of(run_pipeline, p, a, b)
        assert "step multiply" in e.message() and str(e.status()) == "503"
        p.close()
        # The step comes back: so does the ensemble.
        http.load_model("multiply")
        assert http.is_model_ready("pipeline") is True
        wait_until(lambda: pushes[-1:] == [SERVING] and len(pushes) >= 3, timeout=10,
                   what="a SERVING push after the step came back")
        status, body = http_get(server.http_addr, "/metrics")
        assert re.search(r'vigil_model_ready\{model="pipeline",version="1"\} 1', body.decode())
    finally:
        stream.cancel()
        reader.join(10)
        ch.close()
        http.close()


def test_depends_on_gives_a_bls_model_the_same_readiness(server):
    http = server.http_client()
    try:
        assert http.is_model_ready("bls_dep")
        http.unload_model("add_sub")
        assert http.is_model_ready("bls_dep") is False
        status, body = http_get(server.http_addr, "/readyz?verbose")
        line = next(l for l in body.decode().splitlines() if "model/bls_dep" in l)
        assert "dependency add_sub: unloaded" in line, line
        http.load_model("add_sub")
        assert http.is_model_ready("bls_dep") is True
    finally:
        http.close()


def test_unload_dependents(server):
    http = server.http_client()
    try:
        for m in ("double", "multiply", "add_sub"):
            assert http.is_model_ready(m)
        http.unload_model("pipeline", unload_dependents=True)
        assert http.is_model_ready("pipeline") is False
        # Loaded along with pipeline: gone with it. add_sub was loaded by
        # name (and multiply too, by the readiness test), so they stay.
        assert http.is_model_ready("double") is False
        assert http.is_model_ready("add_sub") is True
        http.load_model("pipeline")  # loads its steps again
        assert http.is_model_ready("pipeline") and http.is_model_ready("double")
    finally:
        http.close()


# bls_decoupled_sync is python_backend's example: it returns SUM as INT64
# where its config.pbtxt declares TYPE_INT32. As in Triton, an ensemble
# output passes such a tensor through, and a step that reads it refuses it
# as a request input with another datatype than it declares.
WIDENED = {
    "widened": 'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ] '
               'output [ { name: "S" data_type: TYPE_INT32 dims: [ 1 ] } ] '
               'ensemble_scheduling { step [ { model_name: "bls_decoupled_sync" input_map { key: "IN" value: "IN" } '
               'output_map { key: "SUM" value: "S" } } ] }',
    "widened_fed": 'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ] '
                   'output [ { name: "S" data_type: TYPE_INT32 dims: [ 1 ] } ] '
                   'ensemble_scheduling { step [ '
                   '{ model_name: "bls_decoupled_sync" input_map { key: "IN" value: "IN" } output_map { key: "SUM" value: "T" } }, '
                   '{ model_name: "bls_decoupled_sync" input_map { key: "IN" value: "T" } output_map { key: "SUM" value: "S" } } ] }',
}


@pytest.fixture(scope="module")
def widened(server):
    c = server.http_client()
    try:
        c.load_model("square_int32")  # bls_decoupled_sync's callee
        for name, body in WIDENED.items():
            d = server.repo / name
            (d / "1").mkdir(parents=True, exist_ok=True)
            (d / "config.pbtxt").write_text(f'name: "{name}"\nplatform: "ensemble"\n{body}\n')
            c.load_model(name)
    finally:
        c.close()


def test_an_output_with_another_datatype_passes_through_an_ensemble(proto, widened):
    r = proto.infer("widened", [proto.input("IN", np.array([3], dtype=np.int32))])
    s = r.as_numpy("S")
    assert s.dtype == np.int64 and list(s) == [9], s


def test_a_step_fed_another_datatype_fails_naming_the_step_and_tensor(proto, widened):
    e = error_of(proto.infer, "widened_fed", [proto.input("IN", np.array([3], dtype=np.int32))])
    assert ('ensemble widened_fed: step 1 (model bls_decoupled_sync): model bls_decoupled_sync: '
            'input "IN" has datatype INT64, expected INT32') in e.message(), e.message()
    assert str(e.status()) == proto.status("invalid")
