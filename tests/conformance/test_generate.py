"""The HTTP generate extension with clients nobody here wrote: curl -N and
httpx reading Server-Sent Events from /generate_stream, and plain JSON from
/generate, against the decoupled examples and add_sub."""

import json
import shutil
import subprocess

import httpx
import pytest

from vigil_testlib import CALL_TIMEOUT_S


def url(server, model, route):
    return f"http://{server.http_addr}/v2/models/{model}/{route}"


def sse_events(lines):
    """The data payloads of an SSE stream, decoded; an event ends at a blank line."""
    events, data = [], []
    for line in lines:
        if line == "":
            if data:
                events.append(json.loads("\n".join(data)))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        events.append(json.loads("\n".join(data)))
    return events


REPEAT = {"IN": [4, 2, 0, 1], "DELAY": [1, 2, 3, 4], "WAIT": 5}


def test_generate_stream_with_httpx(server):
    with httpx.Client(timeout=CALL_TIMEOUT_S) as c:
        with c.stream("POST", url(server, "repeat_int32", "generate_stream"), json={"id": "42", **REPEAT}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            events = sse_events(r.iter_lines())
    assert [e["OUT"] for e in events] == [4, 2, 0, 1]
    assert [e["IDX"] for e in events] == [0, 1, 2, 3]
    for e in events:
        assert e["model_name"] == "repeat_int32" and e["model_version"] == "1" and e["id"] == "42"
        assert list(e) == sorted(e), "keys are emitted in sorted order"


def test_generate_stream_with_curl(server):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    res = subprocess.run([curl, "-sN", "--max-time", "20", "-H", "Content-Type: application/json",
                          "-d", json.dumps({"IN": 3}), url(server, "square_int32", "generate_stream")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    events = sse_events(res.stdout.split("\n"))
    assert events == [{"OUT": 3, "model_name": "square_int32", "model_version": "1"}] * 3
    assert res.stdout.endswith("\n\n")


def test_generate_stream_zero_responses_is_an_empty_stream(server):
    r = httpx.post(url(server, "square_int32", "generate_stream"), json={"IN": 0}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 200 and r.text == ""


def test_generate_stream_error_is_an_event_then_the_end(server):
    # IN and DELAY shapes differ: repeat_int32's execute raises.
    r = httpx.post(url(server, "repeat_int32", "generate_stream"),
                   json={"IN": [1, 2], "DELAY": [1], "WAIT": 0}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 500
    events = sse_events(r.text.split("\n"))
    assert len(events) == 1
    assert "expected IN and DELAY shape to match, got [2] and [1]." in events[0]["error"]


def test_generate_refusals_are_plain_json(server):
    r = httpx.post(url(server, "no_such_model", "generate_stream"), json={}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "no_such_model" in r.json()["error"]
    r = httpx.post(url(server, "square_int32", "generate"), json={"IN": [1, 2]}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 400
    assert "can not convert input 'IN' to tensor with proper shape" in r.json()["error"]
    r = httpx.post(url(server, "square_int32", "generate"), json={"IN": 1, "p": [1]}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 400
    assert "parameter 'p' has invalid type. It should be either 'int', 'bool', or 'string'." in r.json()["error"]


def test_generate_one_response(server):
    r = httpx.post(url(server, "square_int32", "generate"), json={"IN": 1, "id": "x"}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert r.json() == {"OUT": 1, "id": "x", "model_name": "square_int32", "model_version": "1"}
    # A decoupled model that sends two responses cannot answer /generate.
    r = httpx.post(url(server, "square_int32", "generate"), json={"IN": 2}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 400
    assert "generate expects model to produce exactly 1 response" in r.json()["error"]


def test_generate_default_model(server):
    # add_sub (max_batch_size 8, dims [16]): 16 elements become shape [1, 16].
    r = httpx.post(url(server, "add_sub", "generate"),
                   json={"INPUT0": list(range(16)), "parameters": {"INPUT1": [1] * 16}}, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["OUTPUT0"] == [float(i + 1) for i in range(16)]
    assert body["OUTPUT1"] == [float(i - 1) for i in range(16)]
