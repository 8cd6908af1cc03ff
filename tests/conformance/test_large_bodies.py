"""Large request bodies (internal/memfile): a binary HTTP body or a gRPC
ModelInferRequest of at least 256 KiB is read into a memory file the server
reuses, and its large inputs reach the model's stub as that file's
descriptor, mapped privately for the batch.
The model gets writable arrays over the body's pages, an output that is an
unwritten view of them goes back from the same pages, and an array the
model keeps past execute keeps its bytes: the server never reuses that
file. Seen in /proc (which mappings hold the inputs, which descriptors the
server keeps) as well as in the bytes, with tritonclient's HTTP and gRPC
clients."""

import json
import os
import queue
import signal
import socket
import threading

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from vigil_testlib import (CALL_TIMEOUT_S, Proto, VigilServer, copy_example_models, http_request, memfd_inodes,
                           stub_pids, wait_until)

PROBE_CONFIG = '''
name: "body_probe"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
'''

# The model errors unless its input lies in a private mapping of the
# server's body file; "mode" says what it returns.
PROBE_MODEL = '''
import json
import time

import triton_python_backend_utils as pb_utils


def body_mappings():
    spans = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/memfd:vigil-body"):
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                spans.append((lo, hi, parts[1]))
    return spans


class TritonPythonModel:
    def initialize(self, args):
        self.kept = None

    def execute(self, requests):
        responses = []
        for r in requests:
            mode = json.loads(r.parameters() or "{}").get("mode", "echo")
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            addr = x.ctypes.data
            where = [perm for lo, hi, perm in body_mappings() if lo <= addr and addr + x.nbytes <= hi]
            if mode != "kept" and where != ["rw-p"]:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "IN is not in a private mapping of the body file: %s" % (where,))))
                continue
            if mode == "double":
                x *= 2  # in place: the model's own pages, not the file's
                out = x
            elif mode == "keep":
                self.kept = x  # an array over the body past execute
                out = x
            elif mode == "kept":
                out = self.kept.copy()
            elif mode == "sleep":
                time.sleep(2)
                out = x
            else:
                out = x
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUT", out)]))
        return responses
'''

N = 1 << 20  # FP32 elements: a 4 MiB input


@pytest.fixture(scope="module")
def body_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("vigil-bodies")
    repo = copy_example_models(base)
    (repo / "body_probe" / "1").mkdir(parents=True)
    (repo / "body_probe" / "config.pbtxt").write_text(PROBE_CONFIG)
    (repo / "body_probe" / "1" / "model.py").write_text(PROBE_MODEL)
    srv = VigilServer(repo, base / "server.log", label="vigil-bodies").start()
    yield srv
    srv.stop()
    assert srv.returncode == 0, srv.log_tail()


@pytest.fixture(params=["http", "grpc"])
def proto(request, body_server):
    p = Proto(request.param, body_server)
    yield p
    p.close()


def infer(p, x, mode="echo"):
    return p.infer("body_probe", [p.input("IN", x)], outputs=[p.output("OUT")],
                   parameters={"mode": mode}).as_numpy("OUT")


def body_files(srv):
    """The inodes of the body files the server holds (a read-write and a
    read-only descriptor each)."""
    return set(memfd_inodes(srv, "vigil-body").values())


def body_mappings(srv):
    """Per stub pid, how many mappings of body files it has."""
    found = {}
    for pid in stub_pids(srv):
        try:
            with open(f"/proc/{pid}/maps") as f:
                n = sum("memfd:vigil-body" in line for line in f)
        except (FileNotFoundError, ProcessLookupError):
            continue  # a stub that just exited
        if n:
            found[pid] = n
    return found


def test_large_input_is_the_body_files_pages_and_comes_back_from_them(body_server, proto):
    for i in range(5):
        x = np.random.default_rng(i).random(N, dtype=np.float32)
        np.testing.assert_array_equal(infer(proto, x), x)
    # One file, reused: its read-write and read-only descriptors.
    fds = memfd_inodes(body_server, "vigil-body")
    assert len(fds) == 2 and len(set(fds.values())) == 1, fds
    # The stub's private mapping ends with the batch.
    assert not body_mappings(body_server)


def test_a_model_writes_its_input_in_place(proto):
    """Writable, as in Triton; the written view is the model's, not the file's."""
    x = np.arange(N, dtype=np.float32)
    np.testing.assert_array_equal(infer(proto, x.copy(), "double"), 2 * x)
    y = np.arange(N, dtype=np.float32)[::-1].copy()
    np.testing.assert_array_equal(infer(proto, y), y)


def test_an_input_the_model_keeps_is_never_overwritten(body_server, proto):
    x = np.ones(N, dtype=np.float32)
    np.testing.assert_array_equal(infer(proto, x), x)
    pooled = body_files(body_server)
    assert len(pooled) == 1, pooled  # the idle file the next body goes into
    kept = np.full(N, 7, dtype=np.float32)
    np.testing.assert_array_equal(infer(proto, kept, "keep"), kept)
    # The server let that file go: the stub's mapping keeps it alive.
    assert not body_files(body_server) & pooled, (pooled, body_files(body_server))
    for i in range(5):
        x = np.full(N, i, dtype=np.float32)
        np.testing.assert_array_equal(infer(proto, x), x)
    # The kept array still reads the first request's bytes.
    np.testing.assert_array_equal(infer(proto, np.zeros(N, np.float32), "kept"), kept)


def test_many_large_bodies_keep_descriptors_flat(body_server, proto):
    x = np.random.default_rng(9).random(N // 4, dtype=np.float32)  # 1 MiB
    for _ in range(5):
        infer(proto, x)
    start = memfd_inodes(body_server, "vigil-body")
    for i in range(200):
        np.testing.assert_array_equal(infer(proto, x), x)
    now = memfd_inodes(body_server, "vigil-body")
    assert len(now) <= len(start), (start, now)


def test_streamed_large_responses_come_back_whole(body_server):
    """ModelStreamInfer: each request's input is in a body file (the model
    checks), its response goes out from the same pages while the stream
    runs on, and a file is reused by a later request only after the
    response in it was written: eight requests in flight, each sent as one
    comes back, 4 MiB each way."""
    window, total = 8, 60
    c = body_server.grpc_client()
    got = queue.Queue()
    xs = {f"s{i}": np.arange(N, dtype=np.float32) * (i + 1) for i in range(total)}
    pending = iter(xs.items())

    def send_next():
        rid, x = next(pending)
        inp = tgrpc.InferInput("IN", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        c.async_stream_infer("body_probe", [inp], request_id=rid, outputs=[tgrpc.InferRequestedOutput("OUT")])

    start = memfd_inodes(body_server, "vigil-body")
    mapped = body_mappings(body_server)  # an array an earlier test's model kept
    try:
        c.start_stream(callback=lambda result, error: got.put((result, error)))
        for _ in range(window):
            send_next()
        for k in range(total):
            result, error = got.get(timeout=CALL_TIMEOUT_S)
            assert error is None, error
            if k + window < total:
                send_next()
            rid = result.get_response().id
            np.testing.assert_array_equal(result.as_numpy("OUT"), xs[rid], err_msg=rid)
    finally:
        c.stop_stream()
        c.close()
    # A file for each request in flight at most; each response's hold let go.
    now = memfd_inodes(body_server, "vigil-body")
    assert len(now) <= len(start) + 2 * (window + 2), (start, now)
    assert body_mappings(body_server) == mapped


def test_a_short_large_body_is_400_and_loses_nothing(body_server):
    """A client that announces a large binary body and sends less."""
    header = json.dumps({"inputs": [{"name": "IN", "datatype": "FP32", "shape": [N],
                                     "parameters": {"binary_data_size": 4 * N}}]}).encode()
    host, port = body_server.http_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=CALL_TIMEOUT_S) as s:
        s.sendall(b"POST /v2/models/body_probe/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/octet-stream\r\n"
                  b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(header), len(header) + 4 * N))
        s.sendall(header + bytes(300 << 10))
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = reply.split(b"\r\n", 1)[0]
    assert b" 400 " in status, reply[:300]
    assert b"only %d arrived" % (len(header) + (300 << 10)) in reply, reply[:400]
    x = np.ones(N, np.float32)
    p = Proto("http", body_server)
    try:
        np.testing.assert_array_equal(infer(p, x), x)
    finally:
        p.close()


def test_a_stub_killed_mid_request_leaks_nothing(body_server, proto):
    x = np.arange(N, dtype=np.float32)
    infer(proto, x)
    result = {}

    def call():
        # A client of its own: tritonclient's HTTP client stays on its thread.
        c = Proto(proto.name, body_server)
        try:
            result["out"] = infer(c, x, "sleep")
        except InferenceServerException as e:
            result["err"] = e
        finally:
            c.close()

    status, body = http_request(body_server.http_addr, "GET", "/readyz?format=json")[:2]
    (m,) = [m for m in json.loads(body)["models"] if m["name"] == "body_probe"]
    pid = m["instances"][0]["pid"]
    mapped = body_mappings(body_server).get(pid, 0)  # an earlier test's kept array, perhaps
    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: body_mappings(body_server).get(pid, 0) > mapped, timeout=15, what="the stub to map the body")
    os.kill(pid, signal.SIGKILL)
    t.join(CALL_TIMEOUT_S)
    assert "err" in result, result
    assert "died" in str(result["err"]), result["err"]

    def served():
        try:
            return np.array_equal(infer(proto, x), x)
        except InferenceServerException:
            return False  # restarting
    wait_until(served, timeout=30, what="the restarted stub to serve")
    assert not body_mappings(body_server)
    # Requests refused while it restarted leave their files to the garbage
    # collector (bounded); served ones reuse the pool: no growth from here.
    settled = memfd_inodes(body_server, "vigil-body")
    for _ in range(50):
        np.testing.assert_array_equal(infer(proto, x), x)
    now = memfd_inodes(body_server, "vigil-body")
    assert len(now) <= len(settled), (settled, now)
    assert proto.client.is_server_ready()
