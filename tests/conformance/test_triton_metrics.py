"""Triton's Prometheus families beside vigil's own, read as a Prometheus
scraper would (prometheus_client's parser when installed, else a small one),
and the statistics' compute_input, compute_output and batch_stats."""

import re
import time

import numpy as np
import pytest

from vigil_testlib import http_request, start_server, wait_until

MODEL_FAMILIES = {
    "nv_inference_request_success": "counter",
    "nv_inference_request_failure": "counter",
    "nv_inference_count": "counter",
    "nv_inference_exec_count": "counter",
    "nv_inference_pending_request_count": "gauge",
    "nv_model_load_duration_secs": "gauge",
    "nv_inference_request_duration_us": "counter",
    "nv_inference_queue_duration_us": "counter",
    "nv_inference_compute_input_duration_us": "counter",
    "nv_inference_compute_infer_duration_us": "counter",
    "nv_inference_compute_output_duration_us": "counter",
}
CPU_FAMILIES = {"nv_cpu_utilization": "gauge", "nv_cpu_memory_total_bytes": "gauge",
                "nv_cpu_memory_used_bytes": "gauge"}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')


def scrape(addr):
    """{family: type}, [(name, {label: value}, value)] from the text format."""
    status, body, headers = http_request(addr, "GET", "/metrics")
    assert status == 200, body
    assert headers.get("Content-Type", "").startswith("text/plain")
    types, samples = {}, []
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, line
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def value(samples, name, **labels):
    vals = [v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())]
    assert len(vals) == 1, (name, labels, vals)
    return vals[0]


def add_sub(proto, n, batch):
    a = np.ones((batch, 16), np.float32)
    for _ in range(n):
        proto.infer("add_sub", [proto.input("INPUT0", a), proto.input("INPUT1", a)])


def test_triton_families_after_traffic(server, http_proto):
    types, before = scrape(server.http_addr)
    add_sub(http_proto, 3, 2)
    for name, typ in {**MODEL_FAMILIES, **CPU_FAMILIES}.items():
        assert types.get(name) == typ, (name, types.get(name))

    def grown():
        _, s = scrape(server.http_addr)
        return s if value(s, "nv_inference_request_success", model="add_sub", version="1") >= \
            value(before, "nv_inference_request_success", model="add_sub", version="1") + 3 else None
    after = wait_until(grown, timeout=5, what="nv_inference_request_success to grow by 3")
    assert any(n.startswith("vigil_inference_requests_total") for n, _, _ in after)  # vigil's own stay beside them
    d = lambda n: value(after, n, model="add_sub", version="1") - value(before, n, model="add_sub", version="1")
    assert d("nv_inference_count") == 6
    assert 1 <= d("nv_inference_exec_count") <= 3
    for n in ("nv_inference_request_duration_us", "nv_inference_compute_infer_duration_us"):
        assert d(n) > 0, n
    # The classic Triton autoscaling ratio is computable.
    ratio = value(after, "nv_inference_queue_duration_us", model="add_sub", version="1") / \
        value(after, "nv_inference_compute_infer_duration_us", model="add_sub", version="1")
    assert ratio >= 0
    for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
        value(after, "nv_inference_request_failure", model="add_sub", version="1", reason=reason)
    assert value(after, "nv_inference_pending_request_count", model="add_sub", version="1") >= 0
    # Loading starts a Python process and imports numpy: well above zero, well below a minute.
    assert 0.01 < value(after, "nv_model_load_duration_secs", model="add_sub", version="1") < 60
    util = value(after, "nv_cpu_utilization")
    assert 0.0 <= util <= 1.0
    assert 0 < value(after, "nv_cpu_memory_used_bytes") <= value(after, "nv_cpu_memory_total_bytes")


def test_invalid_request_is_not_a_success(server, http_proto):
    """A request refused by validation (an unknown input) never reaches the model: it
    adds to no nv_inference_request_success."""
    _, before = scrape(server.http_addr)
    a = np.ones((1, 16), np.float32)
    with pytest.raises(Exception):
        http_proto.infer("add_sub", [http_proto.input("INPUT0", a), http_proto.input("NOPE", a)])
    _, after = scrape(server.http_addr)
    s = lambda x: value(x, "nv_inference_request_success", model="add_sub", version="1")
    assert s(after) == s(before)


def test_statistics_compute_phases_and_batch_stats(proto):
    add_sub(proto, 2, 3)
    raw = proto.client.get_inference_statistics("add_sub") if proto.is_http else \
        proto.client.get_inference_statistics("add_sub", as_json=True)
    st = raw["model_stats"][0]
    inf = st["inference_stats"]
    for phase in ("compute_input", "compute_infer", "compute_output"):
        assert int(inf[phase]["count"]) > 0 and int(inf[phase]["ns"]) > 0, (phase, inf[phase])
    batches = st["batch_stats"]
    assert batches, st
    sizes = [int(b["batch_size"]) for b in batches]
    assert sizes == sorted(sizes) and 3 in sizes or 6 in sizes, sizes
    for b in batches:
        for phase in ("compute_input", "compute_infer", "compute_output"):
            assert int(b[phase]["count"]) > 0, b
    assert sum(int(b["compute_infer"]["count"]) for b in batches) == int(st["execution_count"])


@pytest.fixture(scope="module")
def metrics_port_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "vigil-metrics-port", [
        "--metrics-port", "0", "--metrics-config", "summary_latencies=true",
        "--metrics-config", "histogram_latencies=true", "--metrics-config", "counter_latencies=false"])
    yield srv
    srv.stop()


def test_metrics_port(metrics_port_server):
    addr = wait_until(lambda: next((r["addr"] for r in metrics_port_server.log_records()
                                    if r.get("msg") == "listening" and r.get("protocol") == "metrics"), None),
                      timeout=5, what="the metrics listener's address in the log")
    types, _ = scrape(addr)
    assert types.get("nv_inference_count") == "counter"
    status, _, _ = http_request(addr, "GET", "/v2/health/ready")
    assert status == 404  # only metrics on the metrics port
    status, _, _ = http_request(addr, "POST", "/metrics")
    assert status == 405


def test_opt_in_summaries_and_histogram(metrics_port_server):
    """Triton's --metrics-config switches: summaries and the first-response histogram
    on, the duration counters off."""
    p = metrics_port_server.protocol("http")
    try:
        add_sub(p, 2, 1)
    finally:
        p.close()
    def ready():
        types, samples = scrape(metrics_port_server.http_addr)
        c = [v for n, ls, v in samples if n == "nv_inference_first_response_histogram_ms_count"
             and ls.get("model") == "add_sub"]
        return (types, samples) if c and c[0] >= 2 else None
    types, samples = wait_until(ready, timeout=5, what="the first-response histogram to count 2 requests")
    assert types["nv_inference_first_response_histogram_ms"] == "histogram"
    les = {ls["le"] for n, ls, _ in samples if n == "nv_inference_first_response_histogram_ms_bucket"
           and ls.get("model") == "add_sub"}
    assert les == {"100", "500", "2000", "5000", "+Inf"}, les
    for fam in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        name = f"nv_inference_{fam}_summary_us"
        assert types.get(name) == "summary", name
        qs = {ls.get("quantile") for n, ls, _ in samples if n == name and ls.get("model") == "add_sub"}
        assert qs == {"0.5", "0.9", "0.95", "0.99", "0.999"}, (name, qs)
    assert "nv_inference_request_duration_us" not in types
    assert "nv_inference_count" in types
