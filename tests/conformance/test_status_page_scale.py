"""The status page with 100 models, in headless chromium: the page file
(internal/status/page.html, the one the binary embeds) is served with a
stand-in event stream carrying a view of 100 models of two instances each,
so no hundred stubs are needed. Every instance gets one row of one line,
problems sort out with the filter, and unknown snapshot fields show.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


PAGE = Path(__file__).resolve().parents[2] / "internal" / "status" / "page.html"
MODELS = 100


def view() -> dict:
    at = "2026-01-02T03:04:05Z"
    models = []
    for k in range(MODELS):
        bad = k == 42
        insts = []
        for n in range(2):
            state = "OUT_OF_TRAFFIC" if bad and n == 1 else "READY"
            insts.append({
                "name": f"model_{k:03d}_{n}", "state": state, "routable": state == "READY",
                "pid": 10000 + 2 * k + n, "restarts": 3 if state != "READY" else 0,
                "last_exit": "signal SIGKILL" if state != "READY" else "",
                "reason": "is_healthy() returned False" if state != "READY" else "initialized",
                "since": at,
                "checks": [{"name": c, "ok": not (state != "READY" and c == "hook"), "last": "pass"}
                           for c in ("process", "heartbeat", "progress", "hook", "errors")],
                "extra": {"OpenStreams": 2} if k == 7 and n == 0 else None,
            })
        models.append({
            "name": f"model_{k:03d}", "version": "1", "state": "READY", "ready": True,
            "degraded": bad, "routable": 1 if bad else 2, "min_ready": 1,
            "traffic": {"rate": 12.5, "latency_ms": 3.25, "queue_ms": 0.5, "pending": 0, "requests": 100, "failures": 0},
            "instances": insts,
        })
    return {
        "at": at, "started": True, "draining": False, "reasons_hidden": False,
        "verdicts": [{"probe": p, "ok": True, "checks": [{"name": "ping", "ok": True}]}
                     for p in ("livez", "readyz", "startupz")],
        "models": models,
        "timeline": [{"at": at, "model": "model_042", "version": "1", "instance": "model_042_1",
                      "from": "UNHEALTHY", "to": "OUT_OF_TRAFFIC", "reason": "is_healthy() returned False"}],
    }


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path in ("/", "/status"):
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/status/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            event = {"now": "2026-01-02T03:04:09Z", "view": view()}
            self.wfile.write(b"retry: 1000\n\nevent: view\ndata: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not self.server.done.is_set():
                self.server.done.wait(0.2)
        else:
            self.send_error(404)


@pytest.fixture
def fake_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.done = threading.Event()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.done.set()
    srv.shutdown()
    srv.server_close()


def test_hundred_models_stay_readable(fake_server, browser, tmp_path):
    browser.get(f"http://{fake_server}/")
    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline:
        rows = browser.execute_script(
            "return Array.from(document.querySelectorAll('tr.inst')).map(r => r.getBoundingClientRect().height);")
        if len(rows) == 2 * MODELS:
            break
        time.sleep(0.05)
    assert len(rows) == 2 * MODELS, f"{len(rows)} instance rows, want {2 * MODELS}"
    # One line per instance: no wrapped cells at 1400 px.
    tall = [browser.execute_script("return document.querySelectorAll('tr.inst')[arguments[0]].innerText;", i) for i, h in enumerate(rows) if h >= 30]
    assert not tall, f"instance rows of two lines or more (cells wrap): {tall}"
    summary = browser.find_element("id", "summary").text
    assert f"{MODELS} of {MODELS} models ready" in summary and f"{2 * MODELS} instances" in summary, summary
    assert "OpenStreams: 2" in browser.find_element("css selector", 'tr.inst[data-instance="model_007/1/model_007_0"]').text

    # "problems only" leaves the one model with an instance out of traffic.
    browser.find_element("id", "problems").click()
    shown = browser.execute_script("return Array.from(document.querySelectorAll('tr.model')).map(r => r.dataset.model);")
    assert shown == ["model_042/1"], shown
    browser.find_element("id", "problems").click()

    # The filter finds an instance by PID.
    box = browser.find_element("id", "filter")
    box.send_keys("10085")
    shown = browser.execute_script("return Array.from(document.querySelectorAll('tr.inst')).map(r => r.dataset.instance);")
    assert shown == ["model_042/1/model_042_1"], shown
    box.clear()
    browser.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'));")
    # Nothing sticks out sideways.
    overflow = browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    assert overflow <= 0, f"the page is {overflow} px wider than the window"
    assert browser.save_screenshot(str(tmp_path / "hundred.png"))
