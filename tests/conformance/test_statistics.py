"""Triton statistics extension through tritonclient (HTTP and gRPC)."""

import numpy as np

from vigil_testlib import error_of, wait_until


def run_add_sub(proto, n_requests, batch_size):
    a = np.ones((batch_size, 16), np.float32)
    for _ in range(n_requests):
        proto.infer("add_sub", [proto.input("INPUT0", a), proto.input("INPUT1", a)])


def test_statistics_count_inferences(proto):
    before = proto.stats("add_sub")
    run_add_sub(proto, n_requests=4, batch_size=3)

    # Counts are updated as responses complete; poll briefly, then compare exactly.
    after = wait_until(
        lambda: (s := proto.stats("add_sub"))["success"]["count"] >= before["success"]["count"] + 4
        and s, timeout=5, what="success count to grow by 4")
    assert after["version"] == "1"
    assert after["success"]["count"] - before["success"]["count"] == 4
    # Triton counts inferences per batch element, executions per model execute.
    assert after["inference_count"] - before["inference_count"] == 12
    executions = after["execution_count"] - before["execution_count"]
    assert 1 <= executions <= 4
    assert after["fail"]["count"] == before["fail"]["count"]
    assert after["success"]["ns"] > before["success"]["ns"]
    assert after["compute_infer"]["count"] - before["compute_infer"]["count"] == 4
    assert after["queue"]["count"] - before["queue"]["count"] == 4
    assert after["last_inference"] > 0
    assert after["last_inference"] >= before["last_inference"]


def test_statistics_all_models(proto):
    if proto.is_http:
        raw = proto.client.get_inference_statistics()
    else:
        raw = proto.client.get_inference_statistics(as_json=True)
    names = {m["name"] for m in raw["model_stats"]}
    assert {"add_sub", "identity", "health_hook"} <= names


def test_statistics_version_and_unknown(proto):
    assert proto.stats("add_sub", "1")["version"] == "1"
    err = error_of(proto.client.get_inference_statistics, "no_such_model")
    assert str(err.status()) == proto.status("not_found")
    assert "no_such_model" in err.message()


def test_statistics_same_over_both_protocols(http_proto, grpc_proto):
    run_add_sub(http_proto, 1, 1)
    run_add_sub(grpc_proto, 1, 1)
    # Nothing else is in flight: both front ends read the same counters.
    h = http_proto.stats("add_sub")
    g = grpc_proto.stats("add_sub")
    assert h["inference_count"] == g["inference_count"]
    assert h["success"]["count"] == g["success"]["count"]
