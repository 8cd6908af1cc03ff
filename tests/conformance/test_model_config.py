"""Configuration as Triton completes and overrides it, through tritonclient:
auto_complete_config with pb_utils.ModelConfig (a minimal config.pbtxt, and none
at all, as python_backend's auto_complete example ships them), folders that are
not models logged with the reason, and a repository load's "config" and
"file:" overrides."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from test_python_api import MODELS, serve
from vigil_testlib import VigilServer, error_of, http_request

EXPLICIT = ["--model-control-mode", "explicit"]


@pytest.fixture(scope="module")
def ac_server(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-auto-complete",
                ["batch_auto_complete", "nobatch_auto_complete", "not_a_model"])
    yield srv
    srv.stop()


EXPECTED_IO = {"INPUT0": ("TYPE_FP32", [4]), "INPUT1": ("TYPE_FP32", [4]),
               "OUTPUT0": ("TYPE_FP32", [4]), "OUTPUT1": ("TYPE_FP32", [4])}


def io_of(config):
    return {t["name"]: (t["data_type"], [int(d) for d in t["dims"]])
            for t in config["input"] + config["output"]}


@pytest.mark.parametrize("model,max_batch", [("nobatch_auto_complete", 0), ("batch_auto_complete", 4)])
def test_auto_complete_example(ac_server, model, max_batch):
    """What python_backend's auto_complete client checks, over HTTP and gRPC."""
    http = ac_server.http_client()
    cfg = http.get_model_config(model)
    assert cfg["max_batch_size"] == max_batch
    assert io_of(cfg) == EXPECTED_IO
    assert ("dynamic_batching" in cfg) == (max_batch > 0)
    gcfg = ac_server.grpc_client().get_model_config(model, as_json=True)["config"]
    assert int(gcfg.get("max_batch_size", 0)) == max_batch
    assert io_of(gcfg) == EXPECTED_IO

    shape = [1, 4] if max_batch else [4]
    a = np.arange(4, dtype=np.float32).reshape(shape)
    ins = [thttp.InferInput("INPUT0", shape, "FP32"), thttp.InferInput("INPUT1", shape, "FP32")]
    ins[0].set_data_from_numpy(a)
    ins[1].set_data_from_numpy(np.ones_like(a))
    res = http.infer(model, ins)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - 1)


def test_folder_that_is_not_a_model_is_logged(ac_server):
    recs = [r for r in ac_server.log_records()
            if r.get("msg") == "skipping a directory of the model repository: it is not a model"]
    assert [r["dir"] for r in recs] == ["not_a_model"]
    assert "no config.pbtxt and no version directory" in recs[0]["reason"]
    index = {m["name"] for m in ac_server.http_client().get_model_repository_index()}
    assert "not_a_model" not in index


def test_auto_complete_conflict_fails_the_load(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-ac-conflict", ["auto_complete_conflict"], EXPLICIT)
    try:
        err = error_of(srv.http_client().load_model, "auto_complete_conflict")
        assert str(err.status()) == "400"
        assert ("unable to load model 'auto_complete_conflict', configuration expects datatype TYPE_INT32 "
                "for input 'INPUT0', model provides TYPE_FP32") in err.message()
        assert "auto_complete_config raised ValueError" in err.message()
    finally:
        srv.stop()


def test_disable_auto_complete(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-no-ac", ["nobatch_auto_complete"],
                EXPLICIT + ["--disable-auto-complete-config"])
    try:
        err = error_of(srv.http_client().load_model, "nobatch_auto_complete")
        assert "auto-complete is off (--disable-auto-complete-config)" in err.message()
    finally:
        srv.stop()


ADD_SUB_CONFIG = {
    "backend": "python", "max_batch_size": 0,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
              {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
               {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [4]}],
}


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-overrides", ["custom_metrics"], EXPLICIT)
    yield srv
    srv.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_config_override_applies_to_that_load(explicit_server, protocol):
    client = explicit_server.http_client() if protocol == "http" else explicit_server.grpc_client()
    override = dict(ADD_SUB_CONFIG, instance_group=[{"count": 2, "kind": "KIND_CPU"}])
    client.load_model("custom_metrics", config=json.dumps(override))
    cfg = explicit_server.http_client().get_model_config("custom_metrics")
    assert [g["count"] for g in cfg["instance_group"]] == [2]
    # A load without parameters goes back to the repository's config.pbtxt (3 instances).
    client.load_model("custom_metrics")
    cfg = explicit_server.http_client().get_model_config("custom_metrics")
    assert [g["count"] for g in cfg["instance_group"]] == [3]


def test_config_override_errors_name_the_field(explicit_server):
    http = explicit_server.http_client()
    bad = dict(ADD_SUB_CONFIG, optimization={})
    err = error_of(http.load_model, "custom_metrics", config=json.dumps(bad))
    assert str(err.status()) == "400"
    assert 'unsupported field "optimization"' in err.message()
    err = error_of(http.load_model, "custom_metrics", config="{not json")
    assert str(err.status()) == "400" and 'load request parameter "config"' in err.message()
    status, body, _ = http_request(explicit_server.http_addr, "POST", "/v2/repository/models/custom_metrics/load",
                                   json.dumps({"parameters": {"warmup": True}}).encode())
    assert status == 400 and 'unknown load parameter \\"warmup\\"' in body.decode()


MODEL_PY = b'''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([b"from file override"], dtype=np.object_))])
                for _ in requests]
'''
FILE_CONFIG = {"backend": "python", "max_batch_size": 0,
               "input": [{"name": "IN", "data_type": "TYPE_STRING", "dims": [1]}],
               "output": [{"name": "OUT", "data_type": "TYPE_STRING", "dims": [1]}]}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_file_override_loads_a_model_from_the_request(explicit_server, protocol):
    name = f"from_files_{protocol}"
    client = explicit_server.http_client() if protocol == "http" else explicit_server.grpc_client()
    # Files without a config are refused, as in Triton.
    err = error_of(client.load_model, name, files={"file:1/model.py": MODEL_PY})
    assert "need the \"config\" parameter too" in err.message()
    client.load_model(name, config=json.dumps(FILE_CONFIG), files={"file:1/model.py": MODEL_PY})
    mod = thttp if protocol == "http" else tgrpc
    inp = mod.InferInput("IN", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"x"], dtype=np.object_))
    res = client.infer(name, [inp])
    assert res.as_numpy("OUT")[0] == b"from file override"
    # The model is not in the repository: without the files a reload is not found.
    err = error_of(client.load_model, name)
    assert "no model directory" in err.message()
    client.unload_model(name)


def test_file_override_path_must_stay_inside(explicit_server):
    err = error_of(explicit_server.http_client().load_model, "custom_metrics",
                   config=json.dumps(ADD_SUB_CONFIG), files={"file:../escape.py": b"x"})
    assert str(err.status()) == "400" and "leaves the model directory" in err.message()


def test_warmup_runs_before_ready(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-warmup", ["warmup_probe"])
    try:
        inp = thttp.InferInput("INPUT", [1, 1, 2, 2], "FP32")
        inp.set_data_from_numpy(np.full((1, 1, 2, 2), 0.5, dtype=np.float32))
        out = json.loads(srv.http_client().infer("warmup_probe", [inp]).as_numpy("SEEN")[0][0])
        assert out["format"] == "FORMAT_NCHW"  # input.format reaches the model as metadata
        seen = out["seen"]
        # Whichever instance answered ran every sample first: zeros twice (a batch of 2), random, the file.
        assert [len(b) for b in seen] == [2, 2, 1, 1, 1]
        assert [b[0]["id"].split()[:2] for b in seen[:4]] == [
            ["warmup", "zeros"], ["warmup", "zeros"], ["warmup", "random"], ["warmup", "from_file"]]
        assert seen[0][0]["shape"] == [1, 1, 2, 2] and seen[0][0]["sum"] == 0
        assert seen[2][0]["in_unit_range"] and seen[3][0]["sum"] == 4
        assert seen[4][0]["sum"] == 2
        # Each of the 2 instances warmed up before it became READY.
        recs = srv.log_records()
        for inst in ("warmup_probe_0", "warmup_probe_1"):
            ran = [i for i, r in enumerate(recs) if r.get("msg") == "model_warmup sample ran" and r.get("instance") == inst]
            ready = [i for i, r in enumerate(recs) if r.get("msg") == "instance state changed"
                     and r.get("instance") == inst and r.get("to") == "READY"]
            assert len(ran) == 3 and ready and max(ran) < ready[0], (inst, ran, ready)
        cfg = srv.grpc_client().get_model_config("warmup_probe", as_json=True)["config"]
        assert [w["name"] for w in cfg["model_warmup"]] == ["zeros", "random", "from_file"]
        assert cfg["input"][0]["format"] == "FORMAT_NCHW"
    finally:
        srv.stop()


def test_failed_warmup_fails_the_load_with_the_sample(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-warmup-fail", ["warmup_probe"], EXPLICIT)
    try:
        cfg = (srv.repo / "warmup_probe" / "config.pbtxt").read_text()
        cfg = cfg.replace('name: "from_file"', 'name: "sevens"').replace("ones.bin", "sevens.bin")
        (srv.repo / "warmup_probe" / "config.pbtxt").write_text(cfg)
        err = error_of(srv.http_client().load_model, "warmup_probe")
        assert "model_warmup sample 'sevens' failed" in err.message()
        assert "sevens are not allowed" in err.message()
        index = {m["name"]: m for m in srv.http_client().get_model_repository_index()}
        assert index["warmup_probe"]["state"] == "UNAVAILABLE"
        assert not srv.http_client().is_model_ready("warmup_probe")
    finally:
        srv.stop()


@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_ordering(tmp_path_factory, preserve):
    """A slow request, then a fast one on the other instance: with preserve_ordering
    the fast one's response is released only after the slow one's; without it, before."""
    import concurrent.futures
    import time as _time

    base = tmp_path_factory.mktemp("vigil-ordering")
    repo = base / "models"
    shutil.copytree(MODELS / "ordered", repo / "ordered")
    if not preserve:
        cfg = repo / "ordered" / "config.pbtxt"
        cfg.write_text(cfg.read_text().replace("preserve_ordering: true", "preserve_ordering: false"))
    srv = VigilServer(repo, base / "server.log", label="vigil-ordering").start()
    try:
        def call(ms):
            c = thttp.InferenceServerClient(srv.http_addr, network_timeout=30)
            inp = thttp.InferInput("SLEEP_MS", [1, 1], "INT32")
            inp.set_data_from_numpy(np.array([[ms]], dtype=np.int32))
            res = c.infer("ordered", [inp])
            return int(res.as_numpy("DONE_NS")[0][0]), _time.time_ns()

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = pool.submit(call, 1500)
            # The fast request is sent once the slow one is executing on an instance.
            deadline = _time.monotonic() + 30
            while not (repo / "ordered" / "sleeping").exists():
                assert _time.monotonic() < deadline, "the slow request never started"
                _time.sleep(0.02)
            fast = pool.submit(call, 0)
            slow_done, slow_back = slow.result()
            fast_done, fast_back = fast.result()
        assert fast_done < slow_done  # the fast one ran on the other instance and finished first
        if preserve:
            assert fast_back > slow_done, "preserve_ordering released the later request's response first"
        else:
            assert fast_back < slow_done, "without preserve_ordering the fast response should not wait"
    finally:
        srv.stop()


def test_preferred_batch_size_sends_without_waiting(tmp_path_factory):
    """Four requests reach the preferred size 4 and go as one batch at once,
    instead of waiting the 30 s queue delay for a batch of 8."""
    import concurrent.futures
    import time as _time

    srv = serve(tmp_path_factory, "vigil-preferred", ["preferred"])
    try:
        def call(i):
            c = thttp.InferenceServerClient(srv.http_addr, network_timeout=60)
            inp = thttp.InferInput("X", [1, 1], "INT32")
            inp.set_data_from_numpy(np.array([[i]], dtype=np.int32))
            return int(c.infer("preferred", [inp]).as_numpy("BATCH")[0][0])

        start = _time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sizes = list(pool.map(call, range(4)))
        took = _time.monotonic() - start
        assert sizes == [4, 4, 4, 4]
        assert took < 20, f"the batch of the preferred size waited {took:.1f} s (the queue delay is 30 s)"
    finally:
        srv.stop()
