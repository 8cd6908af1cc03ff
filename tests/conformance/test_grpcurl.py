"""grpcurl against the gRPC port: reflection, OIP and grpc.health.v1 (SPEC §1, §7).

The grpcurl fixture (conftest.py) finds or builds grpcurl, or skips.
"""

import base64
import json
import subprocess

import numpy as np
import pytest

OIP_METHODS = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
               "ModelConfig", "ModelStatistics", "ModelInfer", "ModelStreamInfer",
               "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"]


def run(grpcurl, server, *args, data=None):
    cmd = [*grpcurl, "-plaintext", "-max-time", "20"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [server.grpc_addr, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def ok_json(res):
    assert res.returncode == 0, f"grpcurl exit {res.returncode}: {res.stderr}"
    return json.loads(res.stdout) if res.stdout.strip() else {}


def test_list_services_via_reflection(grpcurl, server):
    res = run(grpcurl, server, "list")
    assert res.returncode == 0, res.stderr
    services = set(res.stdout.split())
    assert "inference.GRPCInferenceService" in services
    assert "grpc.health.v1.Health" in services
    assert services & {"grpc.reflection.v1.ServerReflection",
                       "grpc.reflection.v1alpha.ServerReflection"}


def test_list_oip_methods(grpcurl, server):
    res = run(grpcurl, server, "list", "inference.GRPCInferenceService")
    assert res.returncode == 0, res.stderr
    methods = {m.rsplit(".", 1)[-1] for m in res.stdout.split()}
    assert set(OIP_METHODS) <= methods, set(OIP_METHODS) - methods


def test_server_ready_and_live(grpcurl, server):
    assert ok_json(run(grpcurl, server, "inference.GRPCInferenceService/ServerReady")) == \
        {"ready": True}
    assert ok_json(run(grpcurl, server, "inference.GRPCInferenceService/ServerLive")) == \
        {"live": True}


def test_model_ready(grpcurl, server):
    out = ok_json(run(grpcurl, server, "inference.GRPCInferenceService/ModelReady",
                      data={"name": "add_sub", "version": "1"}))
    assert out == {"ready": True}


def test_model_ready_unknown_is_not_found(grpcurl, server):
    res = run(grpcurl, server, "inference.GRPCInferenceService/ModelReady",
              data={"name": "no_such_model"})
    assert res.returncode != 0
    assert "NotFound" in res.stderr, res.stderr


@pytest.mark.parametrize("service", ["", "readiness", "liveness", "startup", "model/add_sub"])
def test_health_check(grpcurl, server, service):
    out = ok_json(run(grpcurl, server, "grpc.health.v1.Health/Check", data={"service": service}))
    assert out == {"status": "SERVING"}


def test_health_check_default_request(grpcurl, server):
    # No -d at all: the empty request, service "" = server readiness.
    assert ok_json(run(grpcurl, server, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}


def test_health_check_unknown_service(grpcurl, server):
    res = run(grpcurl, server, "grpc.health.v1.Health/Check",
              data={"service": "model/no_such_model"})
    assert res.returncode != 0
    assert "NotFound" in res.stderr, res.stderr


def test_model_infer_typed_contents(grpcurl, server):
    # grpcurl speaks protobuf JSON: typed contents in, raw_output_contents (base64) out.
    a = [float(i) for i in range(16)]
    b = [1.0] * 16
    req = {
        "model_name": "add_sub",
        "id": "grpcurl-1",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "contents": {"fp32_contents": a}},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "contents": {"fp32_contents": b}},
        ],
    }
    out = ok_json(run(grpcurl, server, "inference.GRPCInferenceService/ModelInfer", data=req))
    assert out["id"] == "grpcurl-1"
    names = [o["name"] for o in out["outputs"]]
    raw = dict(zip(names, out.get("rawOutputContents") or out["raw_output_contents"]))
    got0 = np.frombuffer(base64.b64decode(raw["OUTPUT0"]), dtype="<f4")
    got1 = np.frombuffer(base64.b64decode(raw["OUTPUT1"]), dtype="<f4")
    np.testing.assert_array_equal(got0, np.array(a, np.float32) + 1)
    np.testing.assert_array_equal(got1, np.array(a, np.float32) - 1)
