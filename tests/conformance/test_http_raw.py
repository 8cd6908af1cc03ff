"""Plain HTTP details of SPEC §5 that tritonclient does not show: bodies, status
codes and headers."""

import json

import pytest

from vigil_testlib import http_request


def get_json(server, method, path, body=None, headers=None):
    status, raw, hdrs = http_request(server.http_addr, method, path, body, headers)
    return status, (json.loads(raw) if raw else None), hdrs


def test_health_bodies(server):
    assert get_json(server, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert get_json(server, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    status, body, _ = get_json(server, "GET", "/v2/models/add_sub/versions/1/ready")
    assert status == 200
    assert body == {"name": "add_sub", "version": "1", "ready": True}


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/startupz"])
def test_kubernetes_probes(server, path):
    status, raw, _ = http_request(server.http_addr, "GET", path)
    assert (status, raw.strip()) == (200, b"ok")
    status, raw, _ = http_request(server.http_addr, "GET", path + "?verbose")
    assert status == 200
    assert b"[+]" in raw and b"[-]" not in raw


def test_unknown_model_error_body(server):
    status, body, hdrs = get_json(server, "GET", "/v2/models/no_such_model")
    assert status == 404
    assert "no_such_model" in body["error"]
    assert hdrs.get("Content-Type", "").startswith("application/json")


def test_wrong_method_is_405_with_allow(server):
    status, body, hdrs = get_json(server, "GET", "/v2/models/add_sub/infer")
    assert status == 405
    assert "POST" in hdrs.get("Allow", "")
    assert "error" in body


def test_malformed_json_is_400(server):
    status, body, _ = get_json(server, "POST", "/v2/models/add_sub/infer", b"{bad",
                               {"Content-Type": "application/json"})
    assert status == 400
    assert "add_sub" in body["error"]


def test_json_data_count_mismatch_is_400(server):
    req = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1, 2]},
                      {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]}
    status, body, _ = get_json(server, "POST", "/v2/models/add_sub/infer",
                               json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 400
    assert "INPUT0" in body["error"]


def test_plain_json_infer(server):
    req = {"id": "plain", "inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [[1] * 16]}]}
    status, body, _ = get_json(server, "POST", "/v2/models/add_sub/infer",
                               json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 200, body
    assert body["id"] == "plain"
    assert body["model_name"] == "add_sub"
    outs = {o["name"]: o for o in body["outputs"]}
    assert outs["OUTPUT0"]["shape"] == [1, 16]
    assert outs["OUTPUT0"]["data"] == [float(i + 1) for i in range(16)]
    assert outs["OUTPUT1"]["data"] == [float(i - 1) for i in range(16)]


def test_repository_index_body(server):
    status, body, _ = get_json(server, "POST", "/v2/repository/index", b"{}",
                               {"Content-Type": "application/json"})
    assert status == 200
    assert {m["name"]: m["state"] for m in body} == {
        "accumulate": "READY", "add_sub": "READY", "add_sub_chain": "READY", "bls_add_sub": "READY", "health_hook": "READY",
        "identity": "READY", "repeat_int32": "READY", "square_int32": "READY"}
    assert all(set(m) >= {"name", "version", "state", "reason"} for m in body)


def test_metrics_exposed(server):
    status, raw, hdrs = http_request(server.http_addr, "GET", "/metrics")
    assert status == 200
    assert hdrs.get("Content-Type", "").startswith("text/plain")
    assert b"# TYPE" in raw
