"""Fixtures for the conformance suite: real `vigil serve` processes on
ephemeral ports, tritonclient HTTP and gRPC clients, and grpcurl.

Run:  VIGIL_BIN=/abs/path/to/vigil python3 -m pytest -q tests/conformance
(VIGIL_BIN defaults to <repo>/bin/vigil.)

Server bugs found by this suite are marked @pytest.mark.known_bug("...")
and run as strict xfails, so they show in the summary as "xfailed" with
their description and turn into failures (XPASS strict) once fixed, which
is the signal to drop the marker. VIGIL_KNOWN_BUGS=fail runs them as
ordinary tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vigil_testlib import RUNNING, Proto, start_server

# grpcurl version the suite builds when none is installed (`go install`).
GRPCURL_MODULE = "github.com/fullstorydev/grpcurl/cmd/grpcurl"
GRPCURL_VERSION = "v1.9.3"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "known_bug(description): a vigil server bug this test exposes; runs as a strict "
        "xfail unless VIGIL_KNOWN_BUGS=fail")
    config.addinivalue_line(
        "markers", "server_args(*args): extra `vigil serve` arguments for fresh_server")
    config.addinivalue_line(
        "markers", "model(name): the one model of tests/conformance/models a private server loads")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("VIGIL_KNOWN_BUGS") == "fail":
        return
    for item in items:
        mark = item.get_closest_marker("known_bug")
        if mark is not None:
            item.add_marker(pytest.mark.xfail(
                strict=mark.kwargs.get("strict", True), raises=AssertionError,
                reason="SERVER BUG: " + (mark.args[0] if mark.args else "see test")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the log of every server running at that moment."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in list(RUNNING):
            rep.sections.append((f"{srv.label} log", srv.log_tail()))


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server: every example model loaded (model control mode none)."""
    srv = start_server(tmp_path_factory, "vigil-none")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def http_proto(server):
    p = Proto("http", server)
    yield p
    p.close()


@pytest.fixture(scope="session")
def grpc_proto(server):
    p = Proto("grpc", server)
    yield p
    p.close()


@pytest.fixture(params=["http", "grpc"])
def proto(request) -> Proto:
    """The shared server through tritonclient.http and tritonclient.grpc in turn."""
    return request.getfixturevalue(f"{request.param}_proto")


@pytest.fixture
def fresh_server(tmp_path_factory, request):
    """A private server for tests that change server-wide state. Arguments come from
    @pytest.mark.server_args(...) on the test."""
    mark = request.node.get_closest_marker("server_args")
    args = list(mark.args) if mark else []
    srv = start_server(tmp_path_factory, "vigil-private", args)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def grpcurl(tmp_path_factory) -> list[str]:
    """The grpcurl command: $GRPCURL, else grpcurl on PATH, else $(go env GOPATH)/bin,
    else built once with `go install` at the pinned version into a temp GOBIN.
    Skips the grpcurl tests when none can be found or built."""
    env = os.environ.get("GRPCURL")
    if env:
        return [env]
    found = shutil.which("grpcurl")
    if found:
        return [found]
    go = shutil.which("go")
    if not go:
        pytest.skip("grpcurl not found (set GRPCURL, put it on PATH, or install Go)")
    try:
        gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True,
                                timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gopath = ""
    for d in filter(None, gopath.split(os.pathsep)):
        cand = Path(d) / "bin" / "grpcurl"
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    gobin = tmp_path_factory.mktemp("grpcurl-bin")
    try:
        res = subprocess.run(
            [go, "install", f"{GRPCURL_MODULE}@{GRPCURL_VERSION}"],
            cwd=str(gobin), env={**os.environ, "GOBIN": str(gobin), "GOFLAGS": ""},
            capture_output=True, text=True, timeout=480)
    except subprocess.TimeoutExpired:
        pytest.skip(f"building grpcurl {GRPCURL_VERSION} with go install took over 480 s")
    if res.returncode != 0:
        pytest.skip(f"grpcurl not found and `go install {GRPCURL_MODULE}@{GRPCURL_VERSION}` "
                    f"failed: {res.stderr.strip()[-500:]}")
    return [str(gobin / "grpcurl")]


# -- a real browser for the status page tests ------------------------------------

# Page loads and scripts in the browser are bounded too.
BROWSER_TIMEOUT_S = 20.0


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        # Never a silent skip: `make test` installs both (apt-get).
        pytest.fail("the status page test needs chromium and chromedriver on PATH "
                    "(apt-get install chromium chromium-driver; `make deps-browser` does it)")
    return chromium, driver


@pytest.fixture(scope="session")
def browser():
    """Headless chromium through chromedriver (Debian's packages; `make test` installs them).
    A missing selenium, chromium or chromedriver fails the tests that need them, never skips."""
    from selenium import webdriver  # noqa: PLC0415 - only the browser tests need it
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    chromium, driver = _browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,760", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    d = webdriver.Chrome(options=opts, service=Service(driver))
    d.set_page_load_timeout(BROWSER_TIMEOUT_S)
    d.set_script_timeout(BROWSER_TIMEOUT_S)
    yield d
    d.quit()
