"""The system shared memory extension, driven the way Triton's own examples
(simple_http_shm_client.py, simple_grpc_shm_client.py) drive it: regions made
with tritonclient.utils.shared_memory, registered over HTTP and gRPC, inputs
read from and outputs written to them, status, unregister, and regions reused
across requests. A server started without --allow-client-shm refuses
registration with Triton's UNSUPPORTED text."""

import os
import uuid

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from vigil_testlib import CALL_TIMEOUT_S, error_of, http_request, start_server

DISABLED = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
BATCH, WIDTH = 2, 16
NBYTES = BATCH * WIDTH * 4  # one add_sub tensor of [2, 16] FP32


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "vigil-shm", ["--allow-client-shm"])
    yield srv
    srv.stop()
    assert srv.returncode == 0, srv.log_tail()


@pytest.fixture(params=["http", "grpc"])
def client(request, shm_server):
    if request.param == "http":
        c = thttp.InferenceServerClient(shm_server.http_addr, network_timeout=CALL_TIMEOUT_S)
    else:
        c = tgrpc.InferenceServerClient(shm_server.grpc_addr)
    c.unregister_system_shared_memory()
    c.unregister_cuda_shared_memory()  # as Triton's examples start: succeeds, nothing there
    yield request.param, c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def regions():
    """Input and output regions made with tritonclient's helper; destroyed after."""
    made = []
    tag = uuid.uuid4().hex[:8]

    def make(name, size):
        key = f"/conf_{tag}_{name}"
        h = shm.create_shared_memory_region(name, key, size)
        made.append(h)
        return h, key

    yield make
    for h in made:
        shm.destroy_shared_memory_region(h)


def mod(kind):
    return thttp if kind == "http" else tgrpc


def status_of(kind, c, name=""):
    """Region statuses as {name: (key, offset, byte_size)} for either protocol."""
    st = c.get_system_shared_memory_status(name) if kind == "http" else \
        c.get_system_shared_memory_status(name, as_json=True).get("regions", {}).values()
    return {r["name"]: (r["key"], int(r.get("offset", 0)), int(r["byte_size"])) for r in st}


def shm_infer(kind, c, in_region, out_region, out_offset=0):
    m = mod(kind)
    ins = [m.InferInput("INPUT0", [BATCH, WIDTH], "FP32"), m.InferInput("INPUT1", [BATCH, WIDTH], "FP32")]
    ins[0].set_shared_memory(in_region, NBYTES)
    ins[1].set_shared_memory(in_region, NBYTES, offset=NBYTES)
    outs = [m.InferRequestedOutput("OUTPUT0"), m.InferRequestedOutput("OUTPUT1")]
    outs[0].set_shared_memory(out_region, NBYTES, offset=out_offset)
    outs[1].set_shared_memory(out_region, NBYTES, offset=out_offset + NBYTES)
    return c.infer("add_sub", ins, outputs=outs)


def test_register_infer_status_unregister_and_reuse(client, regions):
    kind, c = client
    ih, ikey = regions("input", 2 * NBYTES)
    oh, okey = regions("output", 2 * NBYTES)
    c.register_system_shared_memory("input_data", ikey, 2 * NBYTES)
    c.register_system_shared_memory("output_data", okey, 2 * NBYTES)
    assert status_of(kind, c) == {"input_data": (ikey, 0, 2 * NBYTES), "output_data": (okey, 0, 2 * NBYTES)}
    assert status_of(kind, c, "output_data") == {"output_data": (okey, 0, 2 * NBYTES)}

    rng = np.random.default_rng(7)
    for round_ in range(3):  # the same regions serve request after request
        a = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
        b = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
        shm.set_shared_memory_region(ih, [a, b])
        res = shm_infer(kind, c, "input_data", "output_data")
        out0 = res.get_output("OUTPUT0")
        if kind == "http":
            dtype, shape = out0["datatype"], out0["shape"]
            assert "data" not in out0
        else:
            dtype, shape = out0.datatype, list(out0.shape)
        assert dtype == "FP32" and shape == [BATCH, WIDTH]
        got0 = shm.get_contents_as_numpy(oh, triton_to_np_dtype(dtype), shape)
        got1 = shm.get_contents_as_numpy(oh, np.float32, shape, offset=NBYTES)
        np.testing.assert_array_equal(got0, a + b, err_msg=f"round {round_}")
        np.testing.assert_array_equal(got1, a - b, err_msg=f"round {round_}")

    c.unregister_system_shared_memory("input_data")
    assert set(status_of(kind, c)) == {"output_data"}
    err = error_of(shm_infer, kind, c, "input_data", "output_data")
    assert "Unable to find shared memory region: 'input_data'" in err.message()
    c.unregister_system_shared_memory()
    assert status_of(kind, c) == {}


def test_mixed_shm_and_inline_tensors(client, regions):
    """One input in a region, one in the request; one output to a region, one in the response."""
    kind, c = client
    m = mod(kind)
    ih, ikey = regions("in", NBYTES)
    oh, okey = regions("out", NBYTES)
    c.register_system_shared_memory("in", ikey, NBYTES)
    c.register_system_shared_memory("out", okey, NBYTES)
    a = np.arange(BATCH * WIDTH, dtype=np.float32).reshape(BATCH, WIDTH)
    b = np.full((BATCH, WIDTH), 0.5, dtype=np.float32)
    shm.set_shared_memory_region(ih, [a])
    ins = [m.InferInput("INPUT0", [BATCH, WIDTH], "FP32"), m.InferInput("INPUT1", [BATCH, WIDTH], "FP32")]
    ins[0].set_shared_memory("in", NBYTES)
    ins[1].set_data_from_numpy(b)
    outs = [m.InferRequestedOutput("OUTPUT0"), m.InferRequestedOutput("OUTPUT1")]
    outs[0].set_shared_memory("out", NBYTES)
    res = c.infer("add_sub", ins, outputs=outs)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(oh, np.float32, [BATCH, WIDTH]), a + b)


def test_errors(client, regions):
    kind, c = client
    ih, ikey = regions("small", NBYTES)
    c.register_system_shared_memory("small", ikey, NBYTES)
    err = error_of(c.register_system_shared_memory, "small", ikey, NBYTES)
    assert "shared memory region 'small' already in manager" in err.message()
    err = error_of(c.register_system_shared_memory, "big", ikey, 2 * NBYTES)
    assert "failed to register shared memory region 'big': invalid args" in err.message()
    err = error_of(c.register_system_shared_memory, "gone", "/conformance_no_such_key", 8)
    assert "Unable to open shared memory region: '/conformance_no_such_key'" in err.message()
    err = error_of(c.register_system_shared_memory, "r", "/triton_python_backend_shm_region_1", 8)
    assert "reserved prefix 'triton_python_backend_shm_region_'" in err.message()
    err = error_of(c.get_system_shared_memory_status, "nope")
    assert "Unable to find system shared memory region: 'nope'" in err.message()
    # A region too small for the output: Triton's text, INTERNAL.
    m = mod(kind)
    ins = [m.InferInput("INPUT0", [BATCH, WIDTH], "FP32"), m.InferInput("INPUT1", [BATCH, WIDTH], "FP32")]
    for i in ins:
        i.set_data_from_numpy(np.ones((BATCH, WIDTH), np.float32))
    out = m.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("small", 8)
    err = error_of(c.infer, "add_sub", ins, outputs=[out])
    assert (f"shared memory size specified with the request for output 'OUTPUT0' (8 bytes) "
            f"should be at least {NBYTES} bytes to hold the results") in err.message()
    # Offset past the region.
    ins[0].set_shared_memory("small", NBYTES, offset=NBYTES)
    err = error_of(c.infer, "add_sub", ins)
    assert "Invalid offset for shared memory region: 'small'" in err.message()
    # CUDA shared memory stays refused.
    with pytest.raises(InferenceServerException) as e:
        c.register_cuda_shared_memory("cuda", b"aGFuZGxl", 0, 8)  # base64, as the gRPC client wants it
    assert "CUDA shared memory is not supported" in e.value.message()
    # The server is still up and serving after every refusal.
    assert c.is_server_ready()


def test_metadata_advertises_extension(client):
    kind, c = client
    md = c.get_server_metadata() if kind == "http" else c.get_server_metadata(as_json=True)
    assert "system_shared_memory" in md["extensions"]
    assert "cuda_shared_memory" not in md["extensions"]


def test_http_status_is_an_array_and_wrong_method_is_405(shm_server):
    status, body, _ = http_request(shm_server.http_addr, "GET", "/v2/systemsharedmemory/status")
    assert status == 200 and body.strip() == b"[]"
    status, _, _ = http_request(shm_server.http_addr, "POST", "/v2/systemsharedmemory/status")
    assert status == 405
    status, body, _ = http_request(shm_server.http_addr, "POST", "/v2/systemsharedmemory/region/x/register",
                                body=b'{"byte_size": 8}')
    assert status == 400 and b"Shared memory register request has no 'key' field" in body


def test_disabled_by_default(server, regions):
    """The shared suite server runs without --allow-client-shm."""
    h, key = regions("off", 64)
    hc = thttp.InferenceServerClient(server.http_addr, network_timeout=CALL_TIMEOUT_S)
    gc = tgrpc.InferenceServerClient(server.grpc_addr)
    try:
        err = error_of(hc.register_system_shared_memory, "off", key, 64)
        assert err.message() == DISABLED and err.status() == "501"
        err = error_of(gc.register_system_shared_memory, "off", key, 64)
        assert DISABLED in err.message() and err.status() == "StatusCode.UNIMPLEMENTED"
        err = error_of(hc.unregister_system_shared_memory)
        assert err.message() == DISABLED
        assert hc.get_system_shared_memory_status() == []
        assert "system_shared_memory" not in hc.get_server_metadata()["extensions"]
    finally:
        hc.close()
        gc.close()


def test_grpc_stream_with_shared_memory(shm_server, regions):
    """ModelStreamInfer with inputs and outputs in regions: each response's outputs are
    in the region when the response arrives."""
    import queue
    c = tgrpc.InferenceServerClient(shm_server.grpc_addr)
    ih, ikey = regions("sin", 2 * NBYTES)
    oh, okey = regions("sout", 2 * NBYTES)
    c.register_system_shared_memory("sin", ikey, 2 * NBYTES)
    c.register_system_shared_memory("sout", okey, 2 * NBYTES)
    got = queue.Queue()
    c.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        for k in range(2):
            a = np.full((BATCH, WIDTH), float(k + 1), np.float32)
            b = np.arange(BATCH * WIDTH, dtype=np.float32).reshape(BATCH, WIDTH)
            shm.set_shared_memory_region(ih, [a, b])
            ins = [tgrpc.InferInput("INPUT0", [BATCH, WIDTH], "FP32"), tgrpc.InferInput("INPUT1", [BATCH, WIDTH], "FP32")]
            ins[0].set_shared_memory("sin", NBYTES)
            ins[1].set_shared_memory("sin", NBYTES, offset=NBYTES)
            outs = [tgrpc.InferRequestedOutput("OUTPUT0"), tgrpc.InferRequestedOutput("OUTPUT1")]
            outs[0].set_shared_memory("sout", NBYTES)
            outs[1].set_shared_memory("sout", NBYTES, offset=NBYTES)
            c.async_stream_infer("add_sub", ins, outputs=outs, request_id=f"s{k}")
            result, error = got.get(timeout=CALL_TIMEOUT_S)
            assert error is None, error
            np.testing.assert_array_equal(shm.get_contents_as_numpy(oh, np.float32, [BATCH, WIDTH]), a + b)
            np.testing.assert_array_equal(shm.get_contents_as_numpy(oh, np.float32, [BATCH, WIDTH], offset=NBYTES), a - b)
    finally:
        c.stop_stream()
        c.unregister_system_shared_memory()
        c.close()


# Tensors of at least 256 KiB in a region reach the model's stub as the
# region's own descriptor (internal/ipc/regions.go): the stub maps the
# client's object, reads inputs in place and writes outputs into their
# rooms. The tests below see that in /proc (which processes map the object)
# as well as in the bytes.
LARGE = 1 << 20  # bytes of one FP32 tensor
SLOW_MODEL = '''
import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(1.5)  # long enough to unregister while it runs
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("OUTPUT_FP32", pb_utils.get_input_tensor_by_name(r, "INPUT_FP32").as_numpy())]) for r in requests]
'''
SLOW_CONFIG = '''
name: "slow_identity"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT_FP32" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT_FP32" data_type: TYPE_FP32 dims: [ -1 ] } ]
'''


@pytest.fixture(scope="module")
def large_server(tmp_path_factory):
    from vigil_testlib import VigilServer, copy_example_models
    base = tmp_path_factory.mktemp("vigil-shm-large")
    repo = copy_example_models(base)
    (repo / "slow_identity" / "1").mkdir(parents=True)
    (repo / "slow_identity" / "config.pbtxt").write_text(SLOW_CONFIG)
    (repo / "slow_identity" / "1" / "model.py").write_text(SLOW_MODEL)
    srv = VigilServer(repo, base / "server.log", ["--allow-client-shm"], label="vigil-shm-large").start()
    yield srv
    srv.stop()
    assert srv.returncode == 0, srv.log_tail()


def family(pid):
    """The server's pid and its children's (the model stubs)."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def mapping_pids(srv, key):
    """Which of the server's processes map the shared memory object key."""
    path = "/dev/shm/" + key.lstrip("/")
    found = []
    for pid in family(srv.proc.pid):
        try:
            with open(f"/proc/{pid}/maps") as f:
                if any(line.split(maxsplit=5)[-1].startswith(path) for line in f if len(line.split()) >= 6):
                    found.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # a stub that just exited
    return found


def wait_for(what, cond, timeout=15.0):
    import time
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def large_infer(kind, c, model, n, out_room=None, in_offset=0, out_offset=0):
    m = mod(kind)
    inp = m.InferInput("INPUT_FP32", [n], "FP32")
    inp.set_shared_memory("big_in", 4 * n, offset=in_offset)
    out = m.InferRequestedOutput("OUTPUT_FP32")
    if out_room is not None:
        out.set_shared_memory("big_out", out_room, offset=out_offset)
    return c.infer(model, [inp], outputs=[out])


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_large_tensors_reach_the_stub_as_the_region(kind, large_server, regions):
    c = thttp.InferenceServerClient(large_server.http_addr, network_timeout=CALL_TIMEOUT_S) if kind == "http" \
        else tgrpc.InferenceServerClient(large_server.grpc_addr)
    c.unregister_system_shared_memory()
    n = LARGE // 4
    ih, ikey = regions("big_in", 2 * LARGE)
    oh, okey = regions("big_out", 2 * LARGE)
    c.register_system_shared_memory("big_in", ikey, 2 * LARGE)
    c.register_system_shared_memory("big_out", okey, 2 * LARGE)
    try:
        for round_ in range(3):  # the client rewrites the region: the stub sees each round's bytes
            x = (np.arange(n, dtype=np.float32) + round_ * 0.25)
            shm.set_shared_memory_region(ih, [x], offset=4096 + 64)
            large_infer(kind, c, "identity", n, out_room=LARGE, in_offset=4096 + 64, out_offset=128)
            np.testing.assert_array_equal(shm.get_contents_as_numpy(oh, np.float32, [n], offset=128), x,
                                          err_msg=f"round {round_}")
        stubs = [p for p in mapping_pids(large_server, ikey) if p != large_server.proc.pid]
        assert stubs, "no stub maps the client's input region: its bytes were copied"
        assert [p for p in mapping_pids(large_server, okey) if p != large_server.proc.pid], \
            "no stub maps the client's output region: the server wrote the output"

        # An input in a region, the output in the response: a view of the input.
        res = large_infer(kind, c, "identity", n, in_offset=4096 + 64)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT_FP32"), x)

        # A room too small for the output: Triton's text, as for small tensors.
        err = error_of(large_infer, kind, c, "identity", n, out_room=LARGE - 4)
        assert (f"shared memory size specified with the request for output 'OUTPUT_FP32' ({LARGE - 4} bytes) "
                f"should be at least {LARGE} bytes to hold the results") in err.message()

        # The same name registered again over another object: the stub maps the new
        # object, never the old registration's mapping.
        c.unregister_system_shared_memory("big_in")
        ih2, ikey2 = regions("big_in2", 2 * LARGE)
        y = np.full(n, 7.5, np.float32)
        shm.set_shared_memory_region(ih2, [y])
        c.register_system_shared_memory("big_in", ikey2, 2 * LARGE)
        res = large_infer(kind, c, "identity", n)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT_FP32"), y)
    finally:
        c.unregister_system_shared_memory()
        c.close()


def test_unregister_while_in_flight_then_nothing_stays_mapped(large_server, regions):
    """A request in flight keeps its regions; unregistered meanwhile, they go when it ends, and
    once the client unlinks the objects no process of the server maps them (memory returns)."""
    import threading
    c = thttp.InferenceServerClient(large_server.http_addr, network_timeout=CALL_TIMEOUT_S)
    c.unregister_system_shared_memory()
    n = LARGE // 4
    tag = uuid.uuid4().hex[:8]
    ikey, okey = f"/conf_{tag}_fin", f"/conf_{tag}_fout"
    ih = shm.create_shared_memory_region("fin", ikey, LARGE)
    oh = shm.create_shared_memory_region("fout", okey, LARGE)
    try:
        x = np.linspace(0, 1, n, dtype=np.float32)
        shm.set_shared_memory_region(ih, [x])
        c.register_system_shared_memory("big_in", ikey, LARGE)
        c.register_system_shared_memory("big_out", okey, LARGE)
        result = {}
        gc = tgrpc.InferenceServerClient(large_server.grpc_addr)  # usable from another thread
        t = threading.Thread(target=lambda: result.update(r=large_infer("grpc", gc, "slow_identity", n, out_room=LARGE)))
        t.start()
        wait_for("the stub to map the input region",
                 lambda: any(p != large_server.proc.pid for p in mapping_pids(large_server, ikey)))
        hc = thttp.InferenceServerClient(large_server.http_addr, network_timeout=CALL_TIMEOUT_S)
        hc.unregister_system_shared_memory()
        assert hc.get_system_shared_memory_status() == []
        t.join(CALL_TIMEOUT_S)
        assert "r" in result, "the in-flight request failed"
        gc.close()
        np.testing.assert_array_equal(shm.get_contents_as_numpy(oh, np.float32, [n]), x)
        wait_for("the server to unmap the regions",
                 lambda: large_server.proc.pid not in mapping_pids(large_server, ikey) + mapping_pids(large_server, okey))
        hc.close()
    finally:
        shm.destroy_shared_memory_region(ih)  # unmaps here and unlinks
        shm.destroy_shared_memory_region(oh)
    wait_for("every stub to let the unlinked objects go",
             lambda: not mapping_pids(large_server, ikey) and not mapping_pids(large_server, okey))
    assert c.is_server_ready()
    c.close()


def test_stub_killed_holding_a_region_leaks_nothing(large_server, regions):
    """SIGKILL the stub that maps a client's region: the server stays up, serves the region
    again from the restarted stub, and after unregister and unlink nothing maps it."""
    import signal
    c = thttp.InferenceServerClient(large_server.http_addr, network_timeout=CALL_TIMEOUT_S)
    c.unregister_system_shared_memory()
    n = LARGE // 4
    tag = uuid.uuid4().hex[:8]
    ikey = f"/conf_{tag}_kin"
    ih = shm.create_shared_memory_region("kin", ikey, LARGE)
    try:
        x = np.arange(n, dtype=np.float32)
        shm.set_shared_memory_region(ih, [x])
        c.register_system_shared_memory("big_in", ikey, LARGE)
        np.testing.assert_array_equal(large_infer("http", c, "identity", n).as_numpy("OUTPUT_FP32"), x)
        holders = [p for p in mapping_pids(large_server, ikey) if p != large_server.proc.pid]
        assert holders
        for p in holders:
            os.kill(p, signal.SIGKILL)
        wait_for("the killed stub to be gone", lambda: not set(holders) & set(mapping_pids(large_server, ikey)))

        def served():
            try:
                return np.array_equal(large_infer("http", c, "identity", n).as_numpy("OUTPUT_FP32"), x)
            except InferenceServerException:
                return False  # the instance is restarting
        wait_for("the restarted stub to serve the region", served, timeout=30)
        c.unregister_system_shared_memory()
        fds = [os.readlink(f"/proc/{large_server.proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{large_server.proc.pid}/fd")]
        assert not [f for f in fds if ikey.lstrip("/") in f], "the server kept a descriptor of the region"
    finally:
        shm.destroy_shared_memory_region(ih)
    wait_for("nothing to map the region", lambda: not mapping_pids(large_server, ikey))
    assert c.is_server_ready()
    c.close()
