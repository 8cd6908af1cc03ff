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
import signal
import socket
import time

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from vigil_testlib import CALL_TIMEOUT_S, VigilServer, copy_example_models, http_request

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


def connect(srv, kind):
    if kind == "http":
        return thttp.InferenceServerClient(srv.http_addr, network_timeout=CALL_TIMEOUT_S)
    return tgrpc.InferenceServerClient(srv.grpc_addr)


@pytest.fixture(params=["http", "grpc"])
def client(request, body_server):
    c = connect(body_server, request.param)
    yield c
    c.close()


@pytest.fixture
def http_client(body_server):
    c = connect(body_server, "http")
    yield c
    c.close()


def infer(c, x, mode="echo", model="body_probe"):
    m = thttp if isinstance(c, thttp.InferenceServerClient) else tgrpc
    inp = m.InferInput("IN", list(x.shape), "FP32")
    if m is thttp:
        inp.set_data_from_numpy(x, binary_data=True)
        out = m.InferRequestedOutput("OUT", binary_data=True)
    else:
        inp.set_data_from_numpy(x)
        out = m.InferRequestedOutput("OUT")
    kw = {"client_timeout": CALL_TIMEOUT_S} if m is tgrpc else {}
    return c.infer(model, [inp], outputs=[out], parameters={"mode": mode}, **kw).as_numpy("OUT")


def body_fds(srv):
    """The server's descriptors of body files."""
    pid = srv.proc.pid
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:vigil-body"):
                out.append(fd)
        except FileNotFoundError:
            pass
    return out


def body_files(srv):
    """The inodes of the body files the server holds."""
    pid = srv.proc.pid
    inodes = set()
    for fd in body_fds(srv):
        try:
            inodes.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except FileNotFoundError:
            pass
    return inodes


def stub_pids(srv):
    pids = []
    for task in os.listdir(f"/proc/{srv.proc.pid}/task"):
        with open(f"/proc/{srv.proc.pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


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


def body_mapped_by_stubs(srv):
    return list(body_mappings(srv))


def wait_for(what, cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_large_input_is_the_body_files_pages_and_comes_back_from_them(body_server, client):
    for i in range(5):
        x = np.random.default_rng(i).random(N, dtype=np.float32)
        np.testing.assert_array_equal(infer(client, x), x)
    # One file, reused: its read-write and read-only descriptors.
    assert len(body_fds(body_server)) == 2, body_fds(body_server)
    # The stub's private mapping ends with the batch.
    assert not body_mapped_by_stubs(body_server)


def test_a_model_writes_its_input_in_place(body_server, client):
    """Writable, as in Triton; the written view is the model's, not the file's."""
    x = np.arange(N, dtype=np.float32)
    np.testing.assert_array_equal(infer(client, x.copy(), "double"), 2 * x)
    y = np.arange(N, dtype=np.float32)[::-1].copy()
    np.testing.assert_array_equal(infer(client, y), y)


def test_an_input_the_model_keeps_is_never_overwritten(body_server, client):
    x = np.ones(N, dtype=np.float32)
    np.testing.assert_array_equal(infer(client, x), x)
    pooled = body_files(body_server)
    assert len(pooled) == 1, pooled  # the idle file the next body goes into
    kept = np.full(N, 7, dtype=np.float32)
    np.testing.assert_array_equal(infer(client, kept, "keep"), kept)
    # The server let that file go: the stub's mapping keeps it alive.
    assert not body_files(body_server) & pooled, (pooled, body_files(body_server))
    for i in range(5):
        x = np.full(N, i, dtype=np.float32)
        np.testing.assert_array_equal(infer(client, x), x)
    # The kept array still reads the first request's bytes.
    np.testing.assert_array_equal(infer(client, np.zeros(N, np.float32), "kept"), kept)


def test_many_large_bodies_keep_descriptors_flat(body_server, client):
    x = np.random.default_rng(9).random(N // 4, dtype=np.float32)  # 1 MiB
    for _ in range(5):
        infer(client, x)
    start = len(body_fds(body_server))
    for i in range(200):
        np.testing.assert_array_equal(infer(client, x), x)
    assert len(body_fds(body_server)) <= start, (start, body_fds(body_server))


def test_a_short_large_body_is_400_and_loses_nothing(body_server, http_client):
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
    np.testing.assert_array_equal(infer(http_client, x), x)


def test_a_stub_killed_mid_request_leaks_nothing(body_server, client):
    x = np.arange(N, dtype=np.float32)
    infer(client, x)
    import threading
    result = {}

    def call():
        # A client of its own: tritonclient's HTTP client stays on its thread.
        c = connect(body_server, "http" if isinstance(client, thttp.InferenceServerClient) else "grpc")
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
    wait_for("the stub to map the body", lambda: body_mappings(body_server).get(pid, 0) > mapped)
    os.kill(pid, signal.SIGKILL)
    t.join(CALL_TIMEOUT_S)
    assert "err" in result, result
    assert "died" in str(result["err"]), result["err"]

    def served():
        try:
            return np.array_equal(infer(client, x), x)
        except InferenceServerException:
            return False  # restarting
    wait_for("the restarted stub to serve", served, timeout=30)
    assert not body_mapped_by_stubs(body_server)
    # Requests refused while it restarted leave their files to the garbage
    # collector (bounded); served ones reuse the pool: no growth from here.
    settled = len(body_fds(body_server))
    for _ in range(50):
        np.testing.assert_array_equal(infer(client, x), x)
    assert len(body_fds(body_server)) <= settled, (settled, body_fds(body_server))
    assert client.is_server_ready()
