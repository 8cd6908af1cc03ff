"""What health means for a sequence: a SIGKILL of the instance that holds
one, slots that are all busy, and a drain. Real server, real stubs, the
stock tritonclient; models from tests/conformance/models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from vigil_testlib import VigilServer, http_get, wait_until

MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture
def server(tmp_path_factory, request):
    """A private server with the one model the test names in
    @pytest.mark.model (starting fewer stubs keeps the tests quick), and the
    arguments of @pytest.mark.server_args."""
    base = tmp_path_factory.mktemp("vigil-seqhealth")
    repo = base / "models"
    name = request.node.get_closest_marker("model").args[0]
    shutil.copytree(MODELS / name, repo / name)
    mark = request.node.get_closest_marker("server_args")
    srv = VigilServer(repo, base / "server.log", list(mark.args if mark else ()), label="vigil-seqhealth").start()
    yield srv
    srv.stop()


def step(client, model, sid, v, start=False, end=False):
    inp = httpclient.InferInput("INPUT", [1, 1], "INT32")
    inp.set_data_from_numpy(np.full((1, 1), v, dtype=np.int32))
    r = client.infer(model, [inp], sequence_id=sid, sequence_start=start, sequence_end=end)
    return int(r.as_numpy("OUTPUT")[0][0])


def instances(srv, model):
    status, body = http_get(srv.http_addr, "/readyz?format=json")
    assert status in (200, 503), body
    (m,) = [m for m in json.loads(body)["models"] if m["name"] == model]
    return {i["name"]: i for i in m["instances"]}


@pytest.mark.model("simple_string_dyna_sequence")
def test_kill_the_holding_instance_mid_sequence(server):
    client = server.http_client()
    model = "simple_string_dyna_sequence"  # two instances, state kept between requests
    assert step(client, model, "42", 5, start=True) == 5
    assert step(client, model, "42", 6) == 11
    insts = instances(server, model)
    holders = [i for i in insts.values() if i["sequences"]["open"] == 1]
    assert len(holders) == 1, insts
    holder = holders[0]
    assert holder["sequences"]["slots"] == 1024
    os.kill(holder["pid"], signal.SIGKILL)
    # The next request of the sequence says what happened, at once (the
    # exit is an event), and never continues from empty state elsewhere.
    want = f"sequence 42 was lost: instance {holder['name']} died (killed by signal SIGKILL)"

    def lost():
        try:
            step(client, model, "42", 7)
        except InferenceServerException as e:
            return e
        raise AssertionError("the sequence continued after its instance died")

    err = wait_until(lambda: (lambda e: e if want in e.message() else None)(lost()), timeout=10,
                     what="the lost-sequence error")
    assert err.status() == "503", err
    assert want in lost().message()  # and again: it stays lost
    # A new sequence starts at once, on the healthy instance.
    assert step(client, model, "43", 1, start=True) == 1
    insts = instances(server, model)
    other = [n for n in insts if n != holder["name"]][0]
    assert insts[other]["sequences"]["open"] == 1, insts
    # The same ID may start over.
    assert step(client, model, "42", 2, start=True) == 2
    assert step(client, model, "42", 3, end=True) == 5 + 42


@pytest.mark.model("tiny_sequence")
@pytest.mark.server_args("--max-queue-size", "1")
def test_all_slots_busy_is_ready_and_the_backlog_bound_is_503(server):
    client = server.http_client()
    model = "tiny_sequence"  # two instances of one slot each
    assert step(client, model, 1, 1, start=True) == 2
    assert step(client, model, 2, 1, start=True) == 2
    insts = instances(server, model)
    assert sorted((i["sequences"]["open"], i["sequences"]["slots"]) for i in insts.values()) == [(1, 1), (1, 1)], insts
    assert http_get(server.http_addr, "/v2/health/ready")[0] == 200, "busy is not unhealthy"
    assert http_get(server.http_addr, f"/v2/models/{model}/ready")[0] == 200

    # A third sequence waits for a slot (the backlog holds one) ...
    result = {}

    def third():
        try:
            result["out"] = step(httpclient.InferenceServerClient(server.http_addr), model, 3, 4, start=True)
        except Exception as e:  # noqa: BLE001 - reported below
            result["err"] = e

    t = threading.Thread(target=third)
    t.start()
    wait_until(lambda: "every sequence slot is busy" in server.log_text(), timeout=10,
               what="the third sequence to wait")
    # It counts as pending, as a queued request of any other model does.
    assert client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]["success"]["count"] == 2
    status, body = http_get(server.http_addr, "/metrics")
    assert status == 200
    assert f'nv_inference_pending_request_count{{model="{model}",version="1"}} 1' in body.decode(), body
    # ... a fourth gets a clear 503 at once.
    with pytest.raises(InferenceServerException) as e:
        step(client, model, 4, 1, start=True)
    assert e.value.status() == "503"
    assert "all 2 sequence slots are busy and 1 sequences already wait for one" in e.value.message()
    # When a sequence ends, the waiting one takes its slot.
    assert step(client, model, 1, 1, end=True) == 1
    t.join(timeout=10)
    assert result == {"out": 5}


@pytest.mark.model("simple_sequence")
@pytest.mark.server_args("--drain-delay", "3s")
def test_drain_finishes_open_sequences_and_refuses_new_ones(server):
    client = server.http_client()
    model = "simple_sequence"
    assert step(client, model, 5, 10, start=True) == 11
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: http_get(server.http_addr, "/v2/health/ready")[0] == 503, timeout=5,
               what="readiness to fail on SIGTERM")
    # The open sequence goes on during the drain delay ...
    assert step(client, model, 5, 3) == 3
    # ... a new one is refused.
    with pytest.raises(InferenceServerException) as e:
        step(client, model, 6, 1, start=True)
    assert e.value.status() == "503"
    assert "Server is stopping, scheduler for model has stopped accepting new inference requests" in e.value.message()
    assert step(client, model, 5, 2, end=True) == 2
    assert server.proc.wait(timeout=30) == 0


@pytest.mark.model("simple_string_dyna_sequence")
@pytest.mark.server_args("--health-default", "restart_threshold_seconds=1")
def test_a_restart_vigil_decides_loses_the_sequence(server):
    """A stopped holder (SIGSTOP) keeps its sequence while it may come back;
    once vigil restarts it, the sequence is lost, and its requests say vigil
    stopped the process rather than continuing from empty state."""
    client = server.http_client()
    model = "simple_string_dyna_sequence"
    assert step(client, model, "52", 5, start=True) == 5
    (holder,) = [i for i in instances(server, model).values() if i["sequences"]["open"] == 1]
    os.kill(holder["pid"], signal.SIGSTOP)
    try:
        # Once the stop is seen, the holder takes nothing more (a request
        # handed to it just before would end with the instance's own error).
        wait_until(lambda: not instances(server, model)[holder["name"]]["routable"], timeout=10,
                   what="the stopped holder out of traffic")
        # New sequences go to the other instance meanwhile.
        assert step(client, model, "53", 1, start=True) == 1
        want = f"sequence 52 was lost: instance {holder['name']} was stopped by vigil ("
        with pytest.raises(InferenceServerException) as e:
            step(client, model, "52", 6)  # waits for the holder, then learns its fate
        assert e.value.status() == "503"
        assert want in e.value.message(), e.value.message()
        wait_until(lambda: all(i["pid"] != holder["pid"] and i["state"] == "READY"
                               for i in instances(server, model).values() if i["name"] == holder["name"]),
                   timeout=20, what="the holder restarted")
        assert step(client, model, "52", 2, start=True) == 2
    finally:
        try:
            os.kill(holder["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
