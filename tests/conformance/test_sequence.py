"""Sequences as Triton's clients send them: sequence_id (a number or a
string), sequence_start and sequence_end through tritonclient HTTP and gRPC.
The models live in tests/conformance/models."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from vigil_testlib import Proto, VigilServer, as_bytes_array, wait_until

MODELS = Path(__file__).resolve().parent / "models"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


@pytest.fixture(scope="module")
def seq_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("vigil-seq")
    repo = base / "models"
    shutil.copytree(MODELS, repo)
    # bls_accumulate and accumulate_ensemble call the example accumulate.
    shutil.copytree(EXAMPLES / "accumulate", repo / "accumulate")
    srv = VigilServer(repo, base / "server.log", label="vigil-seq").start()
    yield srv
    srv.stop()


@pytest.fixture(params=["http", "grpc"])
def seq_proto(request, seq_server):
    p = Proto(request.param, seq_server)
    yield p
    p.close()


def info(proto: Proto, **kw):
    r = proto.infer("sequence_info", [proto.input("INPUT", np.array([7], dtype=np.int32))], **kw)
    (corr,) = as_bytes_array(r.as_numpy("CORRID"))
    (params,) = as_bytes_array(r.as_numpy("PARAMETERS"))
    return corr.decode(), int(r.as_numpy("FLAGS")[0]), json.loads(params)


def test_correlation_id_and_flags_reach_the_model(seq_proto):
    # A model without sequence_batching sees them as Triton's Python backend
    # shows them; the reserved keys are not among its parameters().
    assert info(seq_proto, sequence_id=1000, sequence_start=True) == ("int:1000", 1, {})
    assert info(seq_proto, sequence_id=1000) == ("int:1000", 0, {})
    assert info(seq_proto, sequence_id=1000, sequence_end=True) == ("int:1000", 2, {})
    assert info(seq_proto, sequence_id=5, sequence_start=True, sequence_end=True) == ("int:5", 3, {})
    sid = str(uuid.uuid4())
    assert info(seq_proto, sequence_id=sid, sequence_start=True) == (f"str:{sid}", 1, {})
    assert info(seq_proto) == ("int:0", 0, {})
    if seq_proto.is_http:  # the gRPC client sends sequence_id as int64_param
        assert info(seq_proto, sequence_id=2**64 - 1) == (f"int:{2**64 - 1}", 0, {})
    corr, flags, params = info(seq_proto, sequence_id=9, parameters={"tag": "x"})
    assert (corr, flags, params) == ("int:9", 0, {"tag": "x"})


# --- Triton's sequence example clients, re-enacted -------------------------
#
# simple_http_sequence_sync_infer_client.py, simple_grpc_sequence_sync_infer_client.py,
# simple_grpc_sequence_stream_infer_client.py and
# simple_grpc_aio_sequence_stream_infer_client.py send three sequences: 1000 with
# [0] + VALUES, 1001 with [100] + -VALUES, and a string ID with [20] + -VALUES
# (a uuid4 on simple_sequence, "1002" on simple_string_dyna_sequence with -d).
# START is on the first request, END on the last. These tests send the same
# requests through the same client calls and check every value the clients
# assert.

VALUES = [11, 7, 5, 3, 2, 0, 1]


def sequences(dyna: bool):
    """[(model, sequence_id, inputs, expected outputs)] for the three sequences."""
    int_model = "simple_dyna_sequence" if dyna else "simple_sequence"
    str_model = "simple_string_dyna_sequence" if dyna else "simple_sequence"
    s0, s1 = 1000, 1001
    s2 = "1002" if dyna else str(uuid.uuid4())
    in0, in1, in2 = [0] + VALUES, [100] + [-v for v in VALUES], [20] + [-v for v in VALUES]
    exp0 = [1] + VALUES
    exp1 = [101] + [-v for v in VALUES]
    if dyna:
        exp0[-1] += s0
        exp1[-1] += s1
        # The string model accumulates, and adds the ID on the last request.
        exp2, total = [], 0
        for v in in2:
            total += v
            exp2.append(total)
        exp2[-1] += int(s2)
    else:
        exp2 = [21] + [-v for v in VALUES]
    return [(int_model, s0, in0, exp0), (int_model, s1, in1, exp1), (str_model, s2, in2, exp2)]


def seq_input(mod, v):
    inp = mod.InferInput("INPUT", [1, 1], "INT32")
    inp.set_data_from_numpy(np.full((1, 1), v, dtype=np.int32))
    return inp


@pytest.mark.parametrize("dyna", [False, True], ids=["simple_sequence", "dyna"])
def test_sync_clients_interleaved(seq_proto, dyna):
    """The sync clients: one request at a time, the three sequences interleaved."""
    seqs = sequences(dyna)
    got = {sid: [] for _, sid, _, _ in seqs}
    for step in range(len(VALUES) + 1):
        for model, sid, inputs, _ in seqs:
            r = seq_proto.infer(model, [seq_input(seq_proto.mod, inputs[step])],
                                outputs=[seq_proto.mod.InferRequestedOutput("OUTPUT")],
                                sequence_id=sid, sequence_start=step == 0,
                                sequence_end=step == len(VALUES))
            got[sid].append(int(r.as_numpy("OUTPUT")[0][0]))
    for _, sid, _, expected in seqs:
        assert got[sid] == expected, f"sequence {sid}"


@pytest.mark.parametrize("dyna", [False, True], ids=["simple_sequence", "dyna"])
def test_grpc_stream_client(seq_server, dyna):
    """The streaming client: every request of the three sequences sent on one
    stream without waiting, answers routed by request id "<sequence>_<n>"."""
    import queue

    import tritonclient.grpc as grpcclient

    seqs = sequences(dyna)
    done: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(seq_server.grpc_addr) as client:
        client.start_stream(callback=lambda result, error: done.put(error or result), stream_timeout=60)
        for model, sid, inputs, _ in seqs:
            for n, v in enumerate(inputs, 1):
                client.async_stream_infer(model, [seq_input(grpcclient, v)],
                                          outputs=[grpcclient.InferRequestedOutput("OUTPUT")],
                                          request_id=f"{sid}_{n}", sequence_id=sid,
                                          sequence_start=n == 1, sequence_end=n == len(inputs))
        got = {str(sid): [] for _, sid, _, _ in seqs}
        for _ in range(sum(len(s[2]) for s in seqs)):
            item = done.get(timeout=30)
            assert not isinstance(item, Exception), item
            this_id = item.get_response().id.split("_")[0]
            got[this_id].append(int(item.as_numpy("OUTPUT")[0][0]))
        client.stop_stream()
    for _, sid, _, expected in seqs:
        assert got[str(sid)] == expected, f"sequence {sid}"


@pytest.mark.parametrize("dyna", [False, True], ids=["simple_sequence", "dyna"])
def test_grpc_aio_stream_client(seq_server, dyna):
    """The asyncio streaming client: stream_infer over an async generator."""
    import asyncio

    import tritonclient.grpc.aio as aioclient

    seqs = sequences(dyna)

    async def run():
        async with aioclient.InferenceServerClient(seq_server.grpc_addr) as client:
            async def requests():
                for model, sid, inputs, _ in seqs:
                    for n, v in enumerate(inputs, 1):
                        yield {"model_name": model, "inputs": [seq_input(aioclient, v)],
                               "outputs": [aioclient.InferRequestedOutput("OUTPUT")],
                               "request_id": f"{sid}_{n}", "sequence_id": sid,
                               "sequence_start": n == 1, "sequence_end": n == len(inputs)}

            got = {str(sid): [] for _, sid, _, _ in seqs}
            total = sum(len(s[2]) for s in seqs)
            async for result, error in client.stream_infer(requests(), stream_timeout=60):
                assert error is None, error
                got[result.get_response().id.split("_")[0]].append(int(result.as_numpy("OUTPUT")[0][0]))
                total -= 1
                if total == 0:
                    break
            return got

    got = asyncio.run(asyncio.wait_for(run(), timeout=60))
    for _, sid, _, expected in seqs:
        assert got[str(sid)] == expected, f"sequence {sid}"


def test_sequence_errors(seq_proto):
    from tritonclient.utils import InferenceServerException

    def infer(**kw):
        return seq_proto.infer("simple_sequence", [seq_input(seq_proto.mod, 1)], **kw)

    with pytest.raises(InferenceServerException) as e:
        infer(sequence_id=777)
    assert ("inference request for sequence 777 to model 'simple_sequence' must specify the START flag "
            "on the first request of the sequence") in e.value.message()
    assert e.value.status() == seq_proto.status("invalid")
    with pytest.raises(InferenceServerException) as e:
        infer()
    assert "must specify a non-zero or non-empty correlation ID" in e.value.message()
    infer(sequence_id=778, sequence_start=True, sequence_end=True)
    with pytest.raises(InferenceServerException) as e:
        infer(sequence_id=778)
    assert "inference request for sequence 778 to model 'simple_sequence' must specify the START flag" in e.value.message()


def test_accumulate_example(proto):
    """examples/models/accumulate: two interleaved sequences, the running sum
    kept by the server as implicit state."""
    def add(sid, v, **kw):
        inp = proto.mod.InferInput("INPUT", [1, 1], "INT64")
        inp.set_data_from_numpy(np.array([[v]], dtype=np.int64))
        return int(proto.infer("accumulate", [inp], sequence_id=sid, **kw).as_numpy("OUTPUT")[0][0])

    a, b = 31, "acc-" + str(uuid.uuid4())
    assert add(a, 5, sequence_start=True) == 5
    assert add(b, 100, sequence_start=True) == 100
    assert add(a, 6) == 11
    assert add(b, -1) == 99
    assert add(a, 7, sequence_end=True) == 18
    assert add(b, 1, sequence_end=True) == 100
    assert add(a, 1, sequence_start=True) == 1  # a new sequence starts from zero
    add(a, 0, sequence_end=True)


@pytest.mark.parametrize("front", ["bls_accumulate", "accumulate_ensemble"])
def test_sequence_through_bls_and_ensemble(seq_proto, front):
    """A BLS call made with the request's correlation_id() and flags(), and an
    ensemble step (which gets the ensemble request's), reach accumulate's
    sequence batcher: the sum runs over the client's sequence, and a request
    on a sequence that was never started gets accumulate's error through the
    front model. Statistics and nv_* metrics count accumulate's requests."""
    from tritonclient.utils import InferenceServerException

    p = seq_proto
    name = "INPUT" if front == "bls_accumulate" else "X"
    out = "OUTPUT" if front == "bls_accumulate" else "SUM"

    def add(sid, v, **kw):
        inp = p.mod.InferInput(name, [1, 1], "INT64")
        inp.set_data_from_numpy(np.array([[v]], dtype=np.int64))
        return int(p.infer(front, [inp], sequence_id=sid, **kw).as_numpy(out)[0][0])

    before = p.stats("accumulate")["success"]["count"]
    a, b = 61, "via-" + str(uuid.uuid4())
    assert add(a, 5, sequence_start=True) == 5
    assert add(b, 100, sequence_start=True) == 100
    assert add(a, 6) == 11
    assert add(b, -1) == 99
    assert add(a, 7, sequence_end=True) == 18
    assert add(b, 1, sequence_end=True) == 100
    assert p.stats("accumulate")["success"]["count"] == before + 6
    with pytest.raises(InferenceServerException) as e:
        add(a, 1)  # ended above: no START
    assert f"inference request for sequence {a} to model 'accumulate' must specify the START flag" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        add(0, 1)  # no correlation ID at all
    assert "inference request to model 'accumulate' must specify a non-zero or non-empty correlation ID" in e.value.message()


def test_idle_sequence_is_released(seq_server):
    """simple_sequence keeps Triton's default max_sequence_idle_microseconds
    (1 s): after it, the sequence is forgotten and needs a new START."""
    from tritonclient.utils import InferenceServerException

    client = seq_server.http_client()

    def infer(**kw):
        return client.infer("simple_sequence", [seq_input(httpclient_mod(), 1)], sequence_id=4242, **kw)

    infer(sequence_start=True)
    wait_until(lambda: '"sequence":"4242"' in seq_server.log_text() and "sequence idle: released" in seq_server.log_text(),
               timeout=10, what="the idle release")
    with pytest.raises(InferenceServerException) as e:
        infer()
    assert "inference request for sequence 4242 to model 'simple_sequence' must specify the START flag" in e.value.message()


def httpclient_mod():
    import tritonclient.http as httpclient

    return httpclient
