"""Helpers shared by the conformance tests: the server process, protocol
adapters over tritonclient.http / tritonclient.grpc, and small utilities.

Nothing here talks to a model directly; everything goes through a real
`vigil serve` process and the stock Triton clients, as a user would.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_MODELS = REPO_ROOT / "examples" / "models"

# Per-call limits: every network call in the suite is bounded.
CALL_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# Servers that are running now; conftest attaches their logs to failures.
RUNNING: list["VigilServer"] = []
_RUNNING_LOCK = threading.Lock()


def vigil_binary() -> Path:
    """The binary under test: $VIGIL_BIN, else <repo>/bin/vigil."""
    return Path(os.environ.get("VIGIL_BIN") or REPO_ROOT / "bin" / "vigil").resolve()


def copy_example_models(dest: Path) -> Path:
    """A private copy of examples/models, so no test can dirty the original."""
    target = dest / "models"
    shutil.copytree(EXAMPLE_MODELS, target)
    return target


def start_server(tmp_path_factory, label: str, extra_args=None) -> "VigilServer":
    """A started (ready) server on a private copy of the example repository."""
    base = tmp_path_factory.mktemp(label)
    repo = copy_example_models(base)
    return VigilServer(repo, base / "server.log", extra_args, label=label).start()


class ServerStartError(RuntimeError):
    pass


class VigilServer:
    """One `vigil serve` child process on ephemeral ports.

    Addresses come from the JSON log lines
    {"msg":"listening","protocol":"http"|"grpc","addr":"HOST:PORT"}; start()
    returns once /v2/health/ready answers 200 (or raises with the log).
    """

    def __init__(self, repo: Path, log_path: Path, extra_args: list[str] | None = None,
                 label: str = "vigil"):
        self.repo = Path(repo)
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args or [])
        self.label = label
        self.proc: subprocess.Popen | None = None
        self.http_addr: str | None = None
        self.grpc_addr: str | None = None
        self.returncode: int | None = None

    # -- process ---------------------------------------------------------

    def command(self) -> list[str]:
        return [
            str(vigil_binary()), "serve",
            "--model-repository", str(self.repo),
            "--host", "127.0.0.1",
            "--http-port", "0",
            "--grpc-port", "0",
            "--log-format", "json",
            "--python", sys.executable,
            "--drain-delay", "0s",
            *self.extra_args,
        ]

    def start(self, wait_ready: bool = True, timeout: float = START_TIMEOUT_S) -> "VigilServer":
        binary = vigil_binary()
        if not binary.is_file():
            raise ServerStartError(
                f"vigil binary not found at {binary}: build it with "
                f"`go build -o bin/vigil ./cmd/vigil` or set VIGIL_BIN")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=str(self.repo.parent),
            start_new_session=True)
        with _RUNNING_LOCK:
            RUNNING.append(self)
        deadline = time.monotonic() + timeout
        try:
            self._wait_addresses(deadline)
            if wait_ready:
                self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_addresses(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            for rec in self.log_records():
                if rec.get("msg") == "listening":
                    if rec.get("protocol") == "http":
                        self.http_addr = rec.get("addr")
                    elif rec.get("protocol") == "grpc":
                        self.grpc_addr = rec.get("addr")
            if self.http_addr and self.grpc_addr:
                return
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.label}: exited with {self.proc.returncode} before listening\n"
                    + self.log_tail())
            time.sleep(0.05)
        raise ServerStartError(f"{self.label}: no 'listening' log lines within the deadline\n"
                               + self.log_tail())

    def _wait_ready(self, deadline: float) -> None:
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.label}: exited with {self.proc.returncode} while loading\n"
                    + self.log_tail())
            status, body = http_get(self.http_addr, "/v2/health/ready", timeout=2.0)
            if status == 200:
                return
            last = (status, body)
            time.sleep(0.1)
        raise ServerStartError(f"{self.label}: /v2/health/ready not 200 within the deadline "
                               f"(last: {last})\n" + self.log_tail())

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait; SIGKILL only if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncode = None  # did not stop on SIGTERM
        else:
            self.returncode = self.proc.returncode
        with _RUNNING_LOCK:
            if self in RUNNING:
                RUNNING.remove(self)
        self._log.close()
        return self.returncode

    # -- log ---------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()
        return f"--- {self.label} log ({self.log_path}), last {lines} lines ---\n" + \
            "\n".join(text[-lines:])

    def log_records(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line still being written
        return out

    # -- clients -------------------------------------------------------------

    def http_client(self) -> thttp.InferenceServerClient:
        return thttp.InferenceServerClient(
            self.http_addr, connection_timeout=10.0, network_timeout=CALL_TIMEOUT_S)

    def grpc_client(self) -> tgrpc.InferenceServerClient:
        return tgrpc.InferenceServerClient(self.grpc_addr)

    def protocol(self, name: str) -> "Proto":
        return Proto(name, self)


def http_request(addr: str, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None, timeout: float = CALL_TIMEOUT_S):
    """(status, body bytes, headers) for one plain HTTP request; never raises on 4xx/5xx."""
    req = urllib.request.Request(f"http://{addr}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def http_get(addr: str, path: str, timeout: float = CALL_TIMEOUT_S):
    try:
        status, body, _ = http_request(addr, "GET", path, timeout=timeout)
        return status, body
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        return None, repr(e)


# -- protocol adapters ----------------------------------------------------------

# Expected error statuses as each client reports them (str(exc.status())).
STATUS = {
    "http": {"invalid": "400", "not_found": "404", "unavailable": "503", "internal": "500"},
    "grpc": {"invalid": "StatusCode.INVALID_ARGUMENT", "not_found": "StatusCode.NOT_FOUND",
             "unavailable": "StatusCode.UNAVAILABLE", "internal": "StatusCode.INTERNAL"},
}


class Proto:
    """The same operations over tritonclient.http or tritonclient.grpc."""

    def __init__(self, name: str, server: VigilServer, client=None):
        assert name in ("http", "grpc"), name
        self.name = name
        self.server = server
        self.mod = thttp if name == "http" else tgrpc
        self.client = client or (server.http_client() if name == "http" else server.grpc_client())

    def __repr__(self):
        return f"Proto({self.name})"

    @property
    def is_http(self) -> bool:
        return self.name == "http"

    def status(self, key: str) -> str:
        return STATUS[self.name][key]

    def input(self, name: str, arr: np.ndarray, datatype: str | None = None,
              binary: bool = True):
        dt = datatype or np_to_triton_dtype(arr.dtype)
        inp = self.mod.InferInput(name, list(arr.shape), dt)
        if self.is_http:
            inp.set_data_from_numpy(arr, binary_data=binary)
        else:
            inp.set_data_from_numpy(arr)
        return inp

    def output(self, name: str, binary: bool = True):
        if self.is_http:
            return self.mod.InferRequestedOutput(name, binary_data=binary)
        return self.mod.InferRequestedOutput(name)

    def infer(self, model: str, inputs, outputs=None, **kw):
        if not self.is_http:
            kw.setdefault("client_timeout", CALL_TIMEOUT_S)
        return self.client.infer(model, inputs, outputs=outputs, **kw)

    def response_id(self, result) -> str:
        if self.is_http:
            return result.get_response().get("id", "")
        return result.get_response().id

    def stats(self, model: str, version: str = "") -> dict:
        """The model's statistics as a dict of ints, the same for both protocols."""
        if self.is_http:
            raw = self.client.get_inference_statistics(model, version)
        else:
            raw = self.client.get_inference_statistics(model, version, as_json=True,
                                                       client_timeout=CALL_TIMEOUT_S)
        (entry,) = [m for m in raw["model_stats"] if m["name"] == model]
        inf = entry.get("inference_stats", {})

        def dur(key):
            d = inf.get(key, {})
            return {"count": int(d.get("count", 0)), "ns": int(d.get("ns", 0))}

        return {
            "version": entry.get("version", ""),
            "inference_count": int(entry.get("inference_count", 0)),
            "execution_count": int(entry.get("execution_count", 0)),
            "last_inference": int(entry.get("last_inference", 0)),
            "success": dur("success"),
            "fail": dur("fail"),
            "queue": dur("queue"),
            "compute_infer": dur("compute_infer"),
        }

    def repository_index(self) -> list[dict]:
        """[{name, version, state, reason}] with absent fields as ''."""
        if self.is_http:
            raw = self.client.get_model_repository_index()
        else:
            raw = self.client.get_model_repository_index(as_json=True).get("models", [])
        return [{k: m.get(k, "") for k in ("name", "version", "state", "reason")} for m in raw]

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass


class GRPCStream:
    """A tritonclient.grpc stream on its own client; callbacks land in a queue."""

    def __init__(self, server):
        self.client = server.grpc_client()
        self.q = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.q.put((result, error)))

    def send(self, model, inputs, request_id):
        self.client.async_stream_infer(model, inputs, request_id=request_id)

    def get(self):
        return self.q.get(timeout=CALL_TIMEOUT_S)

    def collect(self, n):
        return [self.get() for _ in range(n)]

    def none_within(self, seconds):
        try:
            item = self.q.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected extra callback {item}")

    def close(self):
        self.client.stop_stream()
        self.client.close()


def error_of(fn, *args, **kw) -> InferenceServerException:
    """Call fn and return the InferenceServerException it must raise."""
    try:
        fn(*args, **kw)
    except InferenceServerException as e:
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded; an error was expected")


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll pred() until truthy; return its value or raise AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def stub_pids(srv: VigilServer) -> list[int]:
    """The pids of the server's children (its model stubs)."""
    pids = []
    for task in os.listdir(f"/proc/{srv.proc.pid}/task"):
        with open(f"/proc/{srv.proc.pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def memfd_inodes(srv: VigilServer, name: str) -> dict[str, int]:
    """The server's descriptors of memory files named name (memfd_create's
    name: vigil-body, vigil-bls, vigil-bls-out), by descriptor: the file's
    inode."""
    d = f"/proc/{srv.proc.pid}/fd"
    found = {}
    for fd in os.listdir(d):
        try:
            if os.readlink(f"{d}/{fd}").startswith(f"/memfd:{name} "):
                found[fd] = os.stat(f"{d}/{fd}").st_ino
        except OSError:
            pass  # closed meanwhile
    return found


def as_bytes_array(arr) -> list[bytes]:
    """BYTES outputs arrive as bytes (binary) or str (JSON); compare as bytes."""
    return [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in np.asarray(arr).ravel()]
