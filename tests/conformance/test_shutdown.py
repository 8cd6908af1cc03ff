"""SIGTERM (SPEC §8): readiness fails at once, liveness stays, requests are still
served during the drain delay, then a clean exit 0."""

import signal
import time

import numpy as np
import pytest

from vigil_testlib import Proto, http_get, wait_until


@pytest.mark.server_args("--drain-delay", "3s")  # overrides the suite's 0s (last flag wins)
def test_sigterm_drain_then_exit_zero(fresh_server):
    srv = fresh_server
    http = Proto("http", srv)
    grpc_ = Proto("grpc", srv)
    assert http.client.is_server_ready() is True

    srv.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    wait_until(lambda: http_get(srv.http_addr, "/v2/health/ready", timeout=2)[0] == 503,
               timeout=1.5, what="/v2/health/ready to turn 503 after SIGTERM")
    assert http_get(srv.http_addr, "/v2/health/live", timeout=2)[0] == 200
    assert grpc_.client.is_server_ready() is False
    assert grpc_.client.is_server_live() is True

    # Still serving during the drain delay.
    a = np.ones((1, 16), np.float32)
    for p in (http, grpc_):
        res = p.infer("add_sub", [p.input("INPUT0", a), p.input("INPUT1", a)])
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), 2 * a)
    assert time.monotonic() - t0 < 3.0, "drain checks outlasted the drain delay (slow machine?)"

    rc = srv.proc.wait(timeout=30)
    assert rc == 0
    assert time.monotonic() - t0 >= 2.9, "exited before the drain delay"
    assert any(r.get("msg") == "shutdown complete" for r in srv.log_records())
    http.close()
    grpc_.close()


def test_sigterm_exits_zero_quickly(fresh_server):
    t0 = time.monotonic()
    rc = fresh_server.stop()
    assert rc == 0
    assert time.monotonic() - t0 < 10
