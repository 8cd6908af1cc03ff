"""The status page in a real headless browser (Debian's chromium driven by
selenium through chromedriver): it loads from the binary with nothing from
elsewhere, shows every example model, and follows a SIGKILL of a stub
within a second, on the API port and on the health port.

VIGIL_STATUS_SCREENSHOT=path also writes the screenshot there (the README's
docs/status-page.png is made so: `make screenshot`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from vigil_testlib import http_get, http_request


# The browser fixture is in conftest.py (one chromium for the session).
PAGE_TIMEOUT_S = 20.0
# The page must show a stub's death within this long of the kill.
CHANGE_WITHIN_S = 1.0
ROW = 'add_sub/1/add_sub_0'


def _health_addr(server) -> str:
    for rec in server.log_records():
        if rec.get("msg") == "listening" and rec.get("protocol") == "health":
            return rec["addr"]
    raise AssertionError("no 'listening' log line for the health port\n" + server.log_tail())


def _row(browser, key: str):
    """The instance row's state and PID as the page shows them, or None."""
    return browser.execute_script(
        "var r = document.querySelector('tr.inst[data-instance=\"' + arguments[0] + '\"]');"
        "return r ? [r.dataset.state, r.dataset.pid, document.getElementById('conn').textContent] : null;", key)


def _wait_row(browser, key: str, pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = _row(browser, key)
        if last is not None and pred(last):
            return last
        time.sleep(0.01)
    raise AssertionError(f"{what}: not within {timeout}s; the page shows {last}")


def _pid_from_probe(addr: str, model: str, instance: str) -> int:
    status, body = http_get(addr, "/readyz?format=json")
    assert status == 200, body
    body = body.decode()
    for m in json.loads(body)["models"]:
        if m["name"] == model:
            for i in m["instances"]:
                if i["name"] == instance:
                    return i["pid"]
    raise AssertionError(f"{model}/{instance} not in /readyz?format=json: {body}")


@pytest.mark.server_args("--health-port", "0")
def test_status_page_follows_a_killed_stub(fresh_server, browser, tmp_path):
    addrs = {"api": fresh_server.http_addr, "health": _health_addr(fresh_server)}
    for port, addr in addrs.items():
        browser.get(f"http://{addr}/")
        state, pid, _ = _wait_row(browser, ROW, lambda r: r[0] == "READY" and r[1] and r[2] == "live",
                                  PAGE_TIMEOUT_S, f"{port} port: the page shows {ROW} READY")
        text = browser.find_element("id", "model-rows").text
        for model in ("add_sub", "identity", "health_hook"):
            assert model in text, f"{port} port: {model} missing from the page:\n{text}"
        for probe in ("livez", "readyz", "startupz"):
            assert browser.find_element("id", f"verdict-{probe}").get_attribute("data-ok") == "true"
        # The page's PID is the one the probes report.
        assert int(pid) == _pid_from_probe(fresh_server.http_addr, "add_sub", "add_sub_0")

        os.kill(int(pid), signal.SIGKILL)
        killed = time.monotonic()
        after = _wait_row(browser, ROW, lambda r: r[0] != "READY" or r[1] != pid,
                          CHANGE_WITHIN_S, f"{port} port: the page changes after SIGKILL of PID {pid}")
        took = time.monotonic() - killed
        print(f"{port} port: the page changed {took * 1000:.0f} ms after SIGKILL: {after}")
        _wait_row(browser, ROW, lambda r: r[0] == "READY" and r[1] and r[1] != pid,
                  PAGE_TIMEOUT_S, f"{port} port: {ROW} READY again with a new PID")
        timeline = browser.find_element("id", "timeline-rows").text
        assert "SIGKILL" in timeline, f"{port} port: the timeline does not show the kill:\n{timeline}"

    # Traffic shows as a rate on the model's row within a sample or two.
    body = json.dumps({"inputs": [{"name": "INPUT_BYTES", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}).encode()
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    rate = ""
    while time.monotonic() < deadline:
        for _ in range(10):
            status, _, _ = http_request(fresh_server.http_addr, "POST", "/v2/models/identity/infer", body)
            assert status == 200
        rate = browser.execute_script(
            "var r = document.querySelector('tr.model[data-model=\"identity/1\"]');"
            "return r ? r.children[7].textContent : '';")
        if rate and float(rate) > 0:
            break
        time.sleep(0.05)
    assert rate and float(rate) > 0, f"no request rate on identity's row (shows {rate!r})"

    shot = tmp_path / "status-page.png"
    assert browser.save_screenshot(str(shot)), "the screenshot was not written"
    assert shot.stat().st_size > 10_000
    dest = os.environ.get("VIGIL_STATUS_SCREENSHOT")
    if dest:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)


@pytest.mark.server_args("--health-port", "0", "--health-hide-reasons")
def test_status_view_hides_reasons(fresh_server):
    pid = _pid_from_probe(fresh_server.http_addr, "add_sub", "add_sub_0")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while True:
        status, raw = http_get(_health_addr(fresh_server), "/status/view")
        assert status == 200, raw
        body = raw.decode()
        view = json.loads(body)
        if any(t["instance"] == "add_sub_0" and t["to"] == "EXITED" for t in view["timeline"]):
            break
        assert time.monotonic() < deadline, f"the kill never reached the timeline: {body}"
        time.sleep(0.05)
    assert view["reasons_hidden"] is True
    assert "SIGKILL" not in body.replace('"last_exit":"signal SIGKILL"', ""), body
    assert '"reason"' not in body and '"message"' not in body, body


def test_status_page_shows_open_sequences(fresh_server, browser):
    """accumulate's instance row shows its open sequences and slots (4, its
    max_batch_size), following a sequence's START and END."""
    browser.get(f"http://{fresh_server.http_addr}/")

    def held():
        return browser.execute_script(
            "var r = document.querySelector('tr.inst[data-instance=\"accumulate/1/accumulate_0\"]');"
            "return r ? r.children[10].textContent : null;")

    def wait_held(want):
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while time.monotonic() < deadline:
            if want in (held() or ""):
                return
            time.sleep(0.01)
        raise AssertionError(f"accumulate_0's row shows {held()!r}, want {want!r}")

    def add(v, **seq):
        body = json.dumps({"parameters": {"sequence_id": 77, **seq},
                           "inputs": [{"name": "INPUT", "datatype": "INT64", "shape": [1, 1], "data": [v]}]}).encode()
        status, out, _ = http_request(fresh_server.http_addr, "POST", "/v2/models/accumulate/infer", body)
        assert status == 200, out

    wait_held("0/4 seq")
    add(5, sequence_start=True)
    wait_held("1/4 seq")
    add(1, sequence_end=True)
    wait_held("0/4 seq")
