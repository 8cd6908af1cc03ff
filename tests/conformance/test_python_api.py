"""Triton's Python API pieces beyond tensors, driven through tritonclient: custom
metrics (pb_utils.MetricFamily / Metric) on /metrics, pb_utils.Logger records
in the server log at their levels, and InferenceRequest.model_name()."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from vigil_testlib import Proto, VigilServer, http_get, wait_until

MODELS = Path(__file__).resolve().parent / "python_api_models"
# Models that run another model's code in a folder of their own (no config.pbtxt):
# nobatch_auto_complete is batch_auto_complete's code, which picks its
# max_batch_size from the model's name.
SAME_CODE = {"nobatch_auto_complete": "batch_auto_complete"}


def serve(tmp_path_factory, label, names, extra_args=None):
    """Starts vigil on a repository of the named models of python_api_models."""
    # In explicit mode without --load-model nothing loads at start, so
    # readiness stays false.
    args = extra_args or []
    wait_ready = "explicit" not in args or "--load-model" in args
    base = tmp_path_factory.mktemp(label)
    repo = base / "models"
    repo.mkdir()
    for name in names:
        if name in SAME_CODE:
            shutil.copytree(MODELS / SAME_CODE[name] / "1", repo / name / "1")
        else:
            shutil.copytree(MODELS / name, repo / name)
    return VigilServer(repo, base / "server.log", extra_args, label=label).start(wait_ready=wait_ready)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-python-api", ["custom_metrics", "metric_kinds", "logging"])
    yield srv
    srv.stop()


@pytest.fixture(params=["http", "grpc"])
def proto(request, api_server):
    """The module's server through tritonclient.http and tritonclient.grpc in turn."""
    p = Proto(request.param, api_server)
    yield p
    p.close()


def scrape(srv) -> str:
    status, body = http_get(srv.http_addr, "/metrics")
    assert status == 200, body
    return body.decode()


def series(text: str, name: str) -> dict[str, float]:
    """{label string: value} of the samples of one metric name."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def add_sub(client, n=4):
    import tritonclient.http as thttp
    a = np.arange(n, dtype=np.float32)
    ins = [thttp.InferInput("INPUT0", [n], "FP32"), thttp.InferInput("INPUT1", [n], "FP32")]
    ins[0].set_data_from_numpy(a)
    ins[1].set_data_from_numpy(np.ones_like(a))
    res = client.infer("custom_metrics", ins)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + 1)


def test_custom_metrics_example_counter(api_server):
    """What python_backend's custom_metrics client checks: HELP, TYPE and the labelled
    counter, which grows with every request whichever of the 3 instances runs it."""
    client = api_server.http_client()
    for _ in range(6):
        add_sub(client)
    text = scrape(api_server)
    assert "# HELP requests_process_latency_ns Cumulative time spent processing requests" in text
    assert "# TYPE requests_process_latency_ns counter" in text
    s = series(text, "requests_process_latency_ns")
    assert list(s) == ['{model="custom_metrics",version="1"}'], s
    first = s['{model="custom_metrics",version="1"}']
    assert first > 0
    add_sub(client)
    after = series(scrape(api_server), "requests_process_latency_ns")['{model="custom_metrics",version="1"}']
    assert after > first


def metric_op(proto, *cmd):
    inp = proto.input("OP", np.array([json.dumps(cmd).encode()], dtype=np.object_))
    res = proto.infer("metric_kinds", [inp])
    return json.loads(res.as_numpy("RESULT")[0])


def test_counter_gauge_histogram(proto, api_server):
    p = proto.name
    assert metric_op(proto, "family", f"kinds_{p}_counter", "counter", "a counter") == {"value": None}
    assert metric_op(proto, "family", f"kinds_{p}_gauge", "gauge", "a gauge") == {"value": None}
    assert metric_op(proto, "family", f"kinds_{p}_hist", "histogram", "a histogram") == {"value": None}
    assert metric_op(proto, "metric", "c", f"kinds_{p}_counter", {"route": "a"}, None) == {"value": None}
    assert metric_op(proto, "metric", "g", f"kinds_{p}_gauge", None, None) == {"value": None}
    assert metric_op(proto, "metric", "h", f"kinds_{p}_hist", {"k": "v"}, [1, 5, 10]) == {"value": None}

    metric_op(proto, "increment", "c", 2)
    metric_op(proto, "increment", "c", 3.5)
    assert metric_op(proto, "value", "c") == {"value": 5.5}
    metric_op(proto, "set", "g", 7)
    metric_op(proto, "increment", "g", -2)
    assert metric_op(proto, "value", "g") == {"value": 5.0}
    for v in (0.5, 3, 7, 50):
        assert metric_op(proto, "observe", "h", v) == {"value": None}

    # Triton's refusals, word for word after its prefixes.
    assert metric_op(proto, "increment", "c", -1) == {"error": "Failed to increment metric value: "
                                                     "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by non-negative values."}
    assert "TRITONSERVER_METRIC_KIND_COUNTER does not support Set" in metric_op(proto, "set", "c", 1)["error"]
    assert "TRITONSERVER_METRIC_KIND_GAUGE does not support Observe" in metric_op(proto, "observe", "g", 1)["error"]
    assert "TRITONSERVER_METRIC_KIND_HISTOGRAM does not support Value" in metric_op(proto, "value", "h")["error"]
    assert "TRITONSERVER_METRIC_KIND_HISTOGRAM does not support Increment" in metric_op(proto, "increment", "h", 1)["error"]
    assert metric_op(proto, "metric", "x", f"kinds_{p}_hist", None, None) == {
        "error": "Failed to create metric. Missing required buckets."}
    assert metric_op(proto, "metric", "x", f"kinds_{p}_gauge", None, [1]) == {
        "error": "Failed to create metric. Unexpected buckets found."}
    err = metric_op(proto, "family", f"kinds_{p}_gauge", "counter", "same name, other kind")["error"]
    assert err.startswith("Error when creating MetricFamily: ") and "already exists with kind GAUGE" in err
    err = metric_op(proto, "family", "nv_inference_fake", "counter", "reserved")["error"]
    assert "reserved for the server's own metrics" in err

    text = scrape(api_server)
    assert f"# TYPE kinds_{p}_counter counter" in text
    assert series(text, f"kinds_{p}_counter") == {'{route="a"}': 5.5}
    assert f"# TYPE kinds_{p}_gauge gauge" in text
    assert series(text, f"kinds_{p}_gauge") == {"": 5.0}
    assert f"# TYPE kinds_{p}_hist histogram" in text
    assert series(text, f"kinds_{p}_hist_bucket") == {
        '{k="v",le="1"}': 1, '{k="v",le="5"}': 2, '{k="v",le="10"}': 3, '{k="v",le="+Inf"}': 4}
    assert series(text, f"kinds_{p}_hist_count") == {'{k="v"}': 4}
    assert series(text, f"kinds_{p}_hist_sum") == {'{k="v"}': 60.5}

    # Deleting a family clears its metrics (Triton's rule) and the family leaves /metrics.
    metric_op(proto, "drop_family", f"kinds_{p}_counter")
    err = metric_op(proto, "value", "c")["error"]
    assert "the corresponding 'MetricFamily' has been deleted" in err
    metric_op(proto, "drop_metric", "c")
    assert f"kinds_{p}_counter" not in scrape(api_server)


def log_records(srv, text):
    return [r for r in srv.log_records() if text in str(r.get("msg", ""))]


def test_logger_levels_and_model_name(proto, api_server):
    word = f"hello-{proto.name}"
    inp = proto.input("TEXT", np.array([word.encode()], dtype=np.object_))
    res = proto.infer("logging", [inp])
    assert res.as_numpy("MODEL_NAME")[0] == b"logging"

    wait_until(lambda: log_records(api_server, "plain " + word), what="the model's log records")
    (info,) = log_records(api_server, "info " + word)
    assert info["level"] == "INFO" and info["model_level"] == "INFO"
    assert info["model"] == "logging" and info["instance"] == "logging_0"
    assert info["file"].endswith("/logging/1/model.py") and info["line"] > 0
    (warn,) = log_records(api_server, "warning " + word)
    assert warn["level"] == "WARN" and warn["model_level"] == "WARNING"
    (err,) = log_records(api_server, "error " + word)
    assert err["level"] == "ERROR" and err["model_level"] == "ERROR"
    assert err["line"] == info["line"] + 2
    (plain,) = log_records(api_server, "plain " + word)
    assert plain["level"] == "WARN"
    # VERBOSE only with --log-verbose.
    assert log_records(api_server, "verbose " + word) == []
    assert log_records(api_server, "initialize of logging")[0]["model_level"] == "INFO"


def test_log_verbose_flag(tmp_path_factory):
    srv = serve(tmp_path_factory, "vigil-log-verbose", ["logging"], ["--log-verbose", "1"])
    try:
        proto_client = srv.http_client()
        import tritonclient.http as thttp
        inp = thttp.InferInput("TEXT", [1], "BYTES")
        inp.set_data_from_numpy(np.array([b"v"], dtype=np.object_))
        proto_client.infer("logging", [inp])
        wait_until(lambda: log_records(srv, "verbose v"), what="the verbose record")
        (rec,) = log_records(srv, "verbose v")
        assert rec["model_level"] == "VERBOSE" and rec["level"] == "INFO"
    finally:
        srv.stop()


def test_metrics_leave_with_the_model(tmp_path_factory):
    """A model's series disappear from /metrics when it unloads: nothing stale stays."""
    srv = serve(tmp_path_factory, "vigil-metrics-unload", ["custom_metrics"],
                ["--model-control-mode", "explicit", "--load-model", "custom_metrics"])
    try:
        client = srv.http_client()
        add_sub(client)
        assert series(scrape(srv), "requests_process_latency_ns")
        client.unload_model("custom_metrics")
        wait_until(lambda: "requests_process_latency_ns" not in scrape(srv), what="the series to leave")
        client.load_model("custom_metrics")
        add_sub(client)
        assert series(scrape(srv), "requests_process_latency_ns")
    finally:
        srv.stop()


def test_class_count_refused_on_both_protocols(proto, api_server):
    """The classification extension is refused by name over HTTP and gRPC alike,
    never answered with the raw tensor."""
    a = np.arange(4, dtype=np.float32)
    ins = [proto.input("INPUT0", a), proto.input("INPUT1", a)]
    out = proto.mod.InferRequestedOutput("OUTPUT0", class_count=2)
    from vigil_testlib import error_of
    err = error_of(proto.infer, "custom_metrics", ins, outputs=[out])
    assert "classification extension is not supported" in err.message()
    assert str(err.status()) == proto.status("invalid")
