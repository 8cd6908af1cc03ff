"""Business Logic Scripting: models that call models through the server.

The repository (tests/conformance/models/bls) holds models written to the
shape of python_backend's examples/bls (bls_sync, bls_async, add_sub and a
numpy stand-in for the "pytorch" model) and of examples/bls_decoupled
(bls_decoupled_sync, bls_decoupled_async, with the example's square_int32),
driven as the examples' clients drive them, over HTTP and gRPC; and small models that make a BLS call fail
each way it can: unknown and unready callees, a timeout, a self-call with no
free instance, a callee that dies, a client that goes away.
"""

import json
import os
import queue
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from vigil_testlib import Proto, VigilServer, as_bytes_array, error_of, memfd_inodes, wait_until

BLS_MODELS = Path(__file__).resolve().parent / "models" / "bls"
# Models the repository shares with examples/models, copied in rather than kept twice.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
FROM_EXAMPLES = ["square_int32"]
# Models that run another model's code under their own config: sleeper is slow
# with two instances (the parallel ensemble runs two of its steps at once);
# add_sub_wide and bls_call_wide take tensors of any length.
SAME_CODE = {"sleeper": "slow", "add_sub_wide": "add_sub", "bls_call_wide": "bls_call", "slow_wide": "slow"}
LOADED = ["add_sub", "pytorch", "bls_sync", "bls_async", "bls_call", "slow", "crasher", "loader",
          "square_int32", "bls_decoupled_sync", "bls_decoupled_async", "add_sub_wide", "bls_call_wide", "add_sub_mapped",
          "bls_call_mapped", "pass_through", "crasher_wide", "slow_wide"]


def bls_server(tmp_path_factory, label, mode_args, only=None):
    base = tmp_path_factory.mktemp(label)
    repo = base / "models"
    shutil.copytree(BLS_MODELS, repo)
    for name in FROM_EXAMPLES:
        shutil.copytree(EXAMPLES / name, repo / name)
    for name, code in SAME_CODE.items():
        shutil.copytree(repo / code / "1", repo / name / "1")
    for d in repo.iterdir():
        if only is not None and d.name not in only:
            shutil.rmtree(d)
    return VigilServer(repo, base / "server.log", mode_args, label=label).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    args = ["--model-control-mode", "explicit"]
    for m in LOADED:
        args += ["--load-model", m]
    srv = bls_server(tmp_path_factory, "vigil-bls", args)
    yield srv
    srv.stop()


@pytest.fixture(params=["http", "grpc"])
def proto(request, server):
    p = Proto(request.param, server)
    yield p
    p.close()


def pair():
    return np.random.rand(4).astype(np.float32), np.random.rand(4).astype(np.float32)


def wide_pair(n=1 << 20):
    """Two FP32 inputs of n elements (4 MiB each by default): large enough
    for the calls' memory files."""
    return np.arange(n, dtype=np.float32), np.full(n, 0.5, dtype=np.float32)


def inputs(p, a, b, model_name=None, timeout_us=None):
    out = []
    if model_name is not None:
        out.append(p.input("MODEL_NAME", np.array([model_name], dtype=np.object_), "BYTES"))
    out += [p.input("INPUT0", a), p.input("INPUT1", b)]
    if timeout_us is not None:
        out.append(p.input("TIMEOUT_US", np.array([timeout_us], dtype=np.int64)))
    return out


def call_error(p, target, timeout_us=None, **params):
    """bls_call's view of a failed call to target: (message, code)."""
    a, b = pair()
    r = p.infer("bls_call", inputs(p, a, b, target, timeout_us), parameters=params or None)
    err, code = r.as_numpy("ERROR"), r.as_numpy("CODE")
    assert err is not None, "the call succeeded"
    return as_bytes_array(err)[0].decode(), as_bytes_array(code)[0].decode()


@pytest.mark.parametrize("target", ["add_sub", "pytorch"])
def test_bls_sync_example(proto, target):
    a, b = pair()
    r = proto.infer("bls_sync", inputs(proto, a, b, target), request_id="1")
    assert np.allclose(r.as_numpy("OUTPUT0"), a + b)
    assert np.allclose(r.as_numpy("OUTPUT1"), a - b)


def wait_restarted(srv, name):
    """Waits until name, whose instance was killed, is ready again."""
    c = srv.http_client()
    try:
        wait_until(lambda: c.is_model_ready(name), timeout=30, what=f"{name} restarted")
    finally:
        c.close()


def server_fds(srv):
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def server_out_files(srv):
    """The callee stubs' output files the server holds open."""
    return len(memfd_inodes(srv, "vigil-bls-out"))


def test_large_tensors_cross_a_bls_call(proto, server):
    # 4 MiB per tensor: the caller stub puts them in a memory file whose
    # descriptor goes with the BLS_INFER frame; the server passes it on to
    # the callee's stub, which maps it: add_sub_mapped answers with an error
    # unless its inputs are views of that file (internal/ipc/doc.go).
    n = 1 << 20
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.5, dtype=np.float32)
    for target in ("add_sub_wide", "add_sub_mapped"):
        r = proto.infer("bls_call_wide", inputs(proto, a, b, target))
        assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
        assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
        assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)
    # Each call's file is closed once the call is over: the server's
    # descriptors stay flat over many calls.
    before = server_fds(server)
    for i in range(30):
        r = proto.infer("bls_call_wide", inputs(proto, a + i, b, "add_sub_mapped"))
        assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
        assert r.as_numpy("OUTPUT0")[-1] == a[-1] + i + 0.5
    assert server_fds(server) <= before + 2, (before, server_fds(server))


def test_large_bls_outputs_reach_the_caller_in_a_memory_file(proto, server):
    # The callee's stub writes its large outputs into a sealed memory file
    # of its own, whose descriptor the server passes on with BLS_RESPONSE:
    # bls_call_mapped answers with an error unless the callee's outputs are
    # read-only views of a memfd:vigil-bls-out mapping of its own process.
    n = 1 << 20
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.5, dtype=np.float32)
    r = proto.infer("bls_call_mapped", inputs(proto, a, b, "add_sub_wide"))
    assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
    assert np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)
    # An identity callee's outputs are views of its inputs, in the caller's
    # own input file (memfd:vigil-bls): that file comes back, not a copy.
    r = proto.infer("bls_call_mapped", inputs(proto, a, b, "pass_through"), parameters={"file": "vigil-bls"})
    assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
    assert np.array_equal(r.as_numpy("OUTPUT0"), a)
    assert np.array_equal(r.as_numpy("OUTPUT1"), b)
    # The server closes each file once it has passed it on: its descriptors
    # stay flat over many calls.
    before = server_fds(server)
    for i in range(40):
        target = "pass_through" if i % 4 == 3 else "add_sub_wide"
        file = "vigil-bls" if target == "pass_through" else "vigil-bls-out"
        r = proto.infer("bls_call_mapped", inputs(proto, a + i, b, target), parameters={"file": file})
        assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
        assert r.as_numpy("OUTPUT0")[-1] == a[-1] + i + (0.5 if target == "add_sub_wide" else 0)
    assert server_out_files(server) == 0
    assert server_fds(server) <= before + 2, (before, server_fds(server))


def test_small_bls_outputs_stay_in_the_frame(proto):
    a, b = pair()
    r = proto.infer("bls_call_mapped", inputs(proto, a, b, "add_sub_wide"))
    assert "OUTPUT0, OUTPUT1 not read-only views" in str(r.as_numpy("ERROR")[0])


def test_callee_killed_while_encoding_large_outputs_leaves_no_descriptor(proto, server):
    n = 1 << 20
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.5, dtype=np.float32)
    r = proto.infer("bls_call_wide", inputs(proto, a, b, "crasher_wide"))  # warm: its files exist once
    assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
    before = server_fds(server)
    r = proto.infer("bls_call_wide", inputs(proto, a, b, "crasher_wide"), parameters={"crash": True})
    msg = as_bytes_array(r.as_numpy("ERROR"))[0].decode()
    assert "crasher_wide_0" in msg and "SIGKILL" in msg, msg
    wait_restarted(server, "crasher_wide")
    r = proto.infer("bls_call_wide", inputs(proto, a, b, "crasher_wide"))
    assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
    assert np.array_equal(r.as_numpy("OUTPUT1"), a - b)
    assert server_fds(server) <= before + 2, (before, server_fds(server))


def test_caller_killed_before_its_large_outputs_come_leaves_no_descriptor(server):
    # bls_call_mapped dies 300 ms into its call to slow_wide, which answers
    # with its large outputs 1.5 s in: the server drops that response, and
    # its memory file with it.
    p = Proto("http", server)
    try:
        a, b = wide_pair()
        r = p.infer("bls_call_mapped", inputs(p, a, b, "slow_wide"))  # warm
        assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
        before = server_fds(server)
        e = error_of(p.infer, "bls_call_mapped", inputs(p, a, b, "slow_wide"), parameters={"delay_ms": 1500, "die_ms": 300})
        assert "bls_call_mapped_0" in e.message(), e.message()
        wait_restarted(server, "bls_call_mapped")
        # slow_wide's one instance takes this call once it has answered the
        # dead caller's.
        r = p.infer("bls_call_mapped", inputs(p, a, b, "slow_wide"))
        assert r.as_numpy("ERROR") is None, r.as_numpy("ERROR")
        assert server_out_files(server) == 0
        assert server_fds(server) <= before + 2, (before, server_fds(server))
    finally:
        p.close()


def test_failing_large_calls_do_not_pile_up_files(server):
    # A call that fails (add_sub refuses 1 Mi-element inputs) lets its input
    # file go once nothing views it; a stream of them must not pile up
    # files between garbage collections (8 MiB each here; the server
    # collects once more than 128 MiB wait).
    p = Proto("http", server)
    try:
        a, b = wide_pair()
        most = 0
        for i in range(200):
            r = p.infer("bls_call_wide", inputs(p, a, b, "add_sub"))
            assert "expected [4]" in str(r.as_numpy("ERROR")[0]), r.as_numpy("ERROR")
            if i % 5 == 0:
                most = max(most, len(memfd_inodes(server, "vigil-bls")))
        assert most <= 40, f"{most} call files open at once"
        r = p.infer("bls_call_wide", inputs(p, a, b, "add_sub_wide"))
        assert r.as_numpy("ERROR") is None and np.array_equal(r.as_numpy("OUTPUT0"), a + b)
    finally:
        p.close()


def test_small_bls_inputs_stay_in_the_frame(proto):
    # Below the memory file threshold the inputs travel in band, so
    # add_sub_mapped finds them outside any memory file.
    a, b = pair()
    r = proto.infer("bls_call", inputs(proto, a, b, "add_sub_mapped"))
    assert "INPUT0, INPUT1 not in a mapping" in str(r.as_numpy("ERROR")[0])


def test_bls_sync_example_undefined_model(proto):
    a, b = pair()
    e = error_of(proto.infer, "bls_sync", inputs(proto, a, b, "undefined_model"))
    assert "undefined_model" in e.message()
    assert str(e.status()) == proto.status("internal")  # the model raised TritonModelException


def test_bls_async_example(proto):
    a, b = pair()
    r = proto.infer("bls_async", inputs(proto, a, b), request_id="1")
    assert np.allclose(r.as_numpy("OUTPUT0"), a + b)  # from "pytorch"
    assert np.allclose(r.as_numpy("OUTPUT1"), a - b)  # from "add_sub"


def test_bls_calls_count_in_the_callees_statistics(proto):
    before = proto.stats("add_sub")
    a, b = pair()
    for _ in range(3):
        proto.infer("bls_sync", inputs(proto, a, b, "add_sub"))
    after = proto.stats("add_sub")
    assert after["success"]["count"] == before["success"]["count"] + 3
    assert after["execution_count"] == before["execution_count"] + 3


def test_unknown_callee_fails_at_once(proto):
    start = time.monotonic()
    msg, code = call_error(proto, "nothere")
    assert code == "NOT_FOUND" and "nothere" in msg
    assert time.monotonic() - start < 5


def test_unready_callee_fails_at_once_with_its_reason(proto, server):
    c = server.http_client()
    try:
        error_of(c.load_model, "broken")  # initialize raises: UNAVAILABLE with the reason
    finally:
        c.close()
    start = time.monotonic()
    msg, code = call_error(proto, "broken")
    assert code == "UNAVAILABLE"
    assert "broken" in msg and "weights file missing" in msg, msg
    assert time.monotonic() - start < 5


def test_timeout(proto):
    start = time.monotonic()
    msg, code = call_error(proto, "slow", timeout_us=100_000, delay_ms=3000)
    took = time.monotonic() - start
    assert "timed out" in msg and "100ms" in msg, msg
    assert code == "UNAVAILABLE"
    assert took < 2.5, f"the call took {took:.2f}s; its timeout was 0.1s"


def test_self_call_without_a_free_instance_names_the_cycle(proto):
    start = time.monotonic()
    msg, code = call_error(proto, "bls_call", forward_all=True)
    assert "BLS call cycle bls_call → bls_call" in msg, msg
    assert code == "UNAVAILABLE"
    assert time.monotonic() - start < 5


def test_callee_death_names_the_instance_and_the_exit(proto, server):
    msg, code = call_error(proto, "crasher", crash=True)
    assert "crasher_0" in msg and "SIGKILL" in msg, msg
    assert code == "UNAVAILABLE"
    wait_restarted(server, "crasher")


def test_decoupled_exec_of_a_default_model_yields_its_one_response(proto):
    a, b = pair()
    r = proto.infer("bls_call", inputs(proto, a, b, "add_sub"), parameters={"decoupled": True})
    assert np.allclose(r.as_numpy("OUTPUT0"), a + b)


DATATYPE_WARNING = "output datatype differs from config.pbtxt; passing it through as returned"


@pytest.mark.parametrize("model,factor", [("bls_decoupled_sync", 1), ("bls_decoupled_async", 2)])
def test_bls_decoupled_examples(proto, server, model, factor):
    # What the examples' clients do and assert: IN = 4, 2, 0, 1 with
    # request_id "1", SUM requested; SUM is factor * IN * IN.
    for n in (4, 2, 0, 1):
        data = np.array([n], dtype=np.int32)
        r = proto.infer(model, [proto.input("IN", data)], request_id=str(1), outputs=[proto.output("SUM")])
        sums = r.as_numpy("SUM")
        assert np.allclose(factor * data * data, sums), (model, n, sums)
        # The example returns np.array([0]) + OUT: INT64 where config.pbtxt
        # says INT32, passed through as in Triton.
        out = r.get_output("SUM")
        assert (out["datatype"] if proto.is_http else out.datatype) == "INT64" and sums.dtype == np.int64, out

    def warnings():
        return [rec for rec in server.log_records() if rec.get("msg") == DATATYPE_WARNING and rec.get("model") == model]
    # Once per model, output and datatype: not per request, not per protocol.
    got = wait_until(warnings, timeout=10, what="the datatype warning in the server log")
    assert len(got) == 1, got
    w = got[0]
    assert (w["level"], w["output"], w["datatype"], w["declared"]) == ("WARN", "SUM", "INT64", "INT32"), w


def test_bls_decoupled_example_over_a_stream_and_generate(server):
    # The other surfaces that return outputs pass the INT64 SUM through too.
    c = grpcclient.InferenceServerClient(server.grpc_addr)
    got = queue.Queue()
    try:
        c.start_stream(callback=lambda result, error: got.put((result, error)))
        inp = grpcclient.InferInput("IN", [1], "INT32")
        inp.set_data_from_numpy(np.array([3], dtype=np.int32))
        c.async_stream_infer("bls_decoupled_sync", [inp], request_id="s")
        result, error = got.get(timeout=30)
        assert error is None, error
        assert result.get_output("SUM").datatype == "INT64" and list(result.as_numpy("SUM")) == [9]
    finally:
        c.stop_stream()
        c.close()
    r = httpx.post(f"http://{server.http_addr}/v2/models/bls_decoupled_sync/generate", json={"IN": 5}, timeout=30)
    assert r.status_code == 200 and r.json()["SUM"] == 25, r.text


def test_exec_of_a_decoupled_model_without_decoupled_names_the_fix(proto):
    a, b = pair()
    msg, code = call_error(proto, "square_int32")
    assert "Please use 'decoupled=True'" in msg and code == "UNSUPPORTED", msg


def test_client_gone_cancels_its_bls_calls(server):
    """A client that leaves while its request's BLS call waits for the
    callee: the call ends CANCELLED at once, not when the callee frees up."""
    p = Proto("http", server)
    a, b = pair()
    # Occupy slow's only instance for 4 s.
    blocker = threading.Thread(target=lambda: p.infer("slow", inputs(p, a, b), parameters={"delay_ms": 4000}))
    blocker.start()
    try:
        c = Proto("http", server, client=server.http_client().__class__(
            server.http_addr, connection_timeout=5.0, network_timeout=0.5))
        wait_until(lambda: any("slow: sleeping 4000 ms" in str(r.get("line", "")) for r in server.log_records()),
                   timeout=10, what="slow to start its 4 s request")
        # bls_call's call to slow now queues; the client gives up after 0.5 s.
        start = time.monotonic()
        with pytest.raises(Exception):
            c.infer("bls_call", inputs(c, a, b, "slow"))
        line = wait_until(
            lambda: next((r for r in server.log_records()
                          if "bls_call result: CANCELLED" in str(r.get("line", ""))), None),
            timeout=10, what="bls_call to log its cancelled call")
        assert line
        assert time.monotonic() - start < 3.5, "the call ended only when slow was free again"
    finally:
        blocker.join(30)
        p.close()


def loader_op(p, op):
    r = p.infer("loader", [p.input("OP", np.array([op], dtype=np.object_), "BYTES")])
    return as_bytes_array(r.as_numpy("RESULT"))[0].decode()


def test_model_loading_api_in_explicit_mode(proto):
    assert loader_op(proto, "ready:add_sub") == "True"
    assert loader_op(proto, "ready:add_sub:1") == "True"
    assert "Request for unknown model: 'nothere' is not found" in loader_op(proto, "ready:nothere")
    assert "version string 'x'" in loader_op(proto, "ready:add_sub:x")
    assert loader_op(proto, "unload:pytorch") == "ok"
    assert loader_op(proto, "ready:pytorch") == "False"
    assert proto.client.is_model_ready("pytorch") is False
    assert loader_op(proto, "load:pytorch") == "ok"
    assert loader_op(proto, "ready:pytorch") == "True"
    assert proto.client.is_model_ready("pytorch") is True
    out = loader_op(proto, "load:broken")
    assert out.startswith("raised: Failed to load model: ") and "weights file missing" in out, out
    assert "cannot unload itself" in loader_op(proto, "unload:loader")
    assert "nothere" in loader_op(proto, "load:nothere")


def test_model_loading_api_outside_explicit_mode(tmp_path_factory):
    srv = bls_server(tmp_path_factory, "vigil-bls-none", [], only={"add_sub", "loader"})
    try:
        p = Proto("http", srv)
        out = loader_op(p, "load:add_sub")
        assert out.startswith("raised: Failed to load model: ") and "explicit" in out, out
        out = loader_op(p, "unload:add_sub")
        assert out.startswith("raised: Failed to unload model: ") and "explicit" in out, out
        out = load_with(p, "add_sub", {"backend": "python"})  # overrides change nothing about the mode rule
        assert out.startswith("raised: Failed to load model: ") and "explicit" in out, out
        assert loader_op(p, "ready:add_sub") == "True"  # works in every mode
        p.close()
    finally:
        srv.stop()


PYTORCH_CONFIG = {
    "name": "pytorch", "backend": "python", "max_batch_size": 0,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
              {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
               {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [4]}],
}
MADE_BY_A_MODEL_PY = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([b"loaded by a model"], dtype=np.object_))])
                for _ in requests]
'''
MADE_BY_A_MODEL_CONFIG = {"backend": "python", "max_batch_size": 0,
                          "input": [{"name": "IN", "data_type": "TYPE_STRING", "dims": [1]}],
                          "output": [{"name": "OUT", "data_type": "TYPE_STRING", "dims": [1]}]}


def load_with(p, name, config=None, files=None):
    spec = {"name": name}
    if config is not None:
        spec["config"] = config if isinstance(config, str) else json.dumps(config)
    if files is not None:
        spec["files"] = files
    return loader_op(p, "load_with:" + json.dumps(spec))


def instance_counts(server, name):
    return [g["count"] for g in server.http_client().get_model_config(name)["instance_group"]]


def test_model_loading_api_takes_config_and_files(proto, server):
    # config= replaces config.pbtxt for that load, as the repository API's config does.
    two = dict(PYTORCH_CONFIG, instance_group=[{"count": 2, "kind": "KIND_CPU"}])
    assert load_with(proto, "pytorch", two) == "ok"
    assert instance_counts(server, "pytorch") == [2]
    a, b = pair()
    r = proto.infer("bls_sync", inputs(proto, a, b, "pytorch"))
    assert np.allclose(r.as_numpy("OUTPUT0"), a + b)
    assert loader_op(proto, "load:pytorch") == "ok"  # without config= the repository's file again
    assert instance_counts(server, "pytorch") == [1]

    # files= (with config=) form the model directory: a model the repository does not hold.
    name = "made_by_a_model_" + proto.name
    assert load_with(proto, name, MADE_BY_A_MODEL_CONFIG, {"file:1/model.py": MADE_BY_A_MODEL_PY}) == "ok"
    assert proto.client.is_model_ready(name) is True
    r = proto.infer(name, [proto.input("IN", np.array([b"x"], dtype=np.object_), "BYTES")])
    assert as_bytes_array(r.as_numpy("OUT"))[0] == b"loaded by a model"
    assert loader_op(proto, "unload:" + name) == "ok"
    assert proto.client.is_model_ready(name) is False

    # Refused as the repository API refuses them, under load_model's prefix.
    for spec, want in [
        (dict(files={"file:1/model.py": MADE_BY_A_MODEL_PY}), 'need the "config" parameter too'),
        (dict(config=MADE_BY_A_MODEL_CONFIG, files={"file:../escape.py": "x"}), "leaves the model directory"),
        (dict(config=MADE_BY_A_MODEL_CONFIG, files={"1/model.py": "x"}), 'load_model files key "1/model.py" must be "file:"'),
        (dict(config="{not json"), 'load request parameter "config"'),
        (dict(config=dict(PYTORCH_CONFIG, response_cache={"enable": True})), 'unsupported field "response_cache"'),
    ]:
        out = load_with(proto, "pytorch", **spec)
        assert out.startswith("raised: Failed to load model: ") and want in out, (spec, out)
    out = load_with(proto, "pytorch", MADE_BY_A_MODEL_CONFIG, ["file:1/model.py"])
    assert out == ("raised: failed to load model 'pytorch', files should be a dictionary of file paths and "
                   "file contents"), out  # Triton's text, checked in the stub
    assert instance_counts(server, "pytorch") == [1]
    assert proto.client.is_model_ready("pytorch") is True
