"""The stub: one model instance behind one socket.

Two sockets, two readers:
  main thread (data socket)     reads INIT, EXECUTE and FINALIZE and runs
                                each as it arrives, one at a time, in order:
                                no hand-off between threads on the request
                                path.
  control (control socket)      answers PING itself and hands HEALTH to the
                                health thread, so both are answered while an
                                execute runs.
  health                        calls the user's health hook, single-flight:
                                HEALTH requests that arrive while a call
                                runs share its result.
  asyncio (on first use)        runs coroutine initialize/execute/hook/
                                finalize on one event loop.
  the model's own threads       may send responses through response
                                senders (vigil_stub.batch) at any time.

A decoupled model's execute returns None and answers through response
senders; the reply to its EXECUTE says so for every request. An `async def
execute` of a decoupled model is not waited for: the coroutine runs on the
event loop while the main thread reads the next batch, so one instance
serves many requests at once.

Writes to each socket are serialized by its Conn's lock. The stub exits on
end of stream on either socket, and after answering FINALIZE.
"""

import json
import os
import queue
import sys
import threading
import traceback

from . import wire
from .servercalls import ServerCalls
from .batch import Batch, Registry
from .modelfile import NoModelClass, model_class, numpy_missing
from .wire import FLAG_ERROR, FLAG_REPLY, Demux

_HOOK_NAMES = ("is_healthy", "is_ready")  # Baseten's name wins over Triton's


def _is_awaitable(obj):
    return hasattr(type(obj), "__await__")


def _format_traceback(exc, skip=0):
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class ModelFailure(Exception):
    """A failure to report to the server as an error reply."""

    def __init__(self, op, message, exc=None, code="INTERNAL"):
        super().__init__(message)
        self.op = op
        self.message = message
        self.exc = exc
        self.code = code

    def body(self):
        d = {"op": self.op, "message": self.message, "code": self.code}
        if self.exc is not None:
            d["type"] = type(self.exc).__name__
            d["traceback"] = _format_traceback(self.exc, skip=1)
        return json.dumps(d).encode()


def _raised(op, exc):
    return ModelFailure(op, str(exc), exc)


class Stub:
    def __init__(self, conn, control):
        self._conn = conn
        self._control = control
        # Set by the main thread once initialize has returned.
        self._ready = False
        self._model = None
        self._codec = None
        self._hook = None
        self._hook_name = ""
        self._hook_lock = threading.Lock()
        self._hook_waiters = []
        self._hook_running = False
        self._hook_go = queue.SimpleQueue()
        self._loop = None
        self._loop_lock = threading.Lock()
        # Requests to the server (LOG, METRIC) on the control socket.
        self._server_calls = ServerCalls(control)  # LOG and METRIC
        self._decoupled = False
        self._instance_name = ""
        self._batches = Registry()
        # The data socket is read through the demultiplexer, so that
        # threads waiting for BLS responses can read it while execute runs.
        self._demux = Demux(conn)
        self._calls = None  # calls.Calls, once numpy is importable
        self._flags = 0  # of the frame being handled
        # The server may send an EXECUTE while the one before it runs, and
        # take it back (WITHDRAW) before it begins: the control thread and
        # the main thread agree on which under this lock.
        self._begin_lock = threading.Lock()
        self._begun = None  # seq of the EXECUTE running or last run
        self._withdrawn = set()

    # --- reader -----------------------------------------------------------

    def serve(self):
        """Serve both sockets until end of stream; returns the exit code."""
        threading.Thread(target=self._control_loop, name="vigil-control", daemon=True).start()
        threading.Thread(target=self._health_loop, name="vigil-health", daemon=True).start()
        handlers = {
            wire.KIND_INIT: self._init,
            wire.KIND_EXECUTE: self._execute,
            wire.KIND_FINALIZE: self._finalize,
        }
        demux = self._demux
        while True:
            try:
                frame = demux.next_request()
            except OSError as e:
                print("vigil_stub: cannot read from the server: %s" % e, file=sys.stderr)
                return 1
            if frame is None:
                return 0
            kind, flags, seq, body = frame
            if kind == wire.KIND_EXECUTE and not self._begin(seq, body):
                continue
            self._flags = flags
            handler = handlers.get(kind)
            try:
                if handler is None:
                    raise ModelFailure("protocol", "frame kind %d does not belong on the data socket" % kind)
                handler(seq, body)
            except ModelFailure as f:
                self._fail(kind, seq, f)
            except BaseException as e:  # noqa: BLE001 - a stub bug must not end the stub
                self._fail(kind, seq, ModelFailure("stub", "vigil_stub failed: %s: %s" % (type(e).__name__, e), e))
            if kind == wire.KIND_FINALIZE:
                return 0

    def _begin(self, seq, body):
        """Mark EXECUTE seq begun; False when the server withdrew it (its
        descriptors are closed, and it gets no reply)."""
        with self._begin_lock:
            if seq not in self._withdrawn:
                self._begun = seq
                return True
            self._withdrawn.discard(seq)
        if type(body) is not bytearray:
            for fd in body.fds + ([body.out_region] if body.out_region is not None else []):
                os.close(fd)
        return False

    def _withdraw(self, seq, body):
        """Answer WITHDRAW: 1 when the EXECUTE named has not begun (it never
        will), 0 when it has."""
        target = wire.U32.unpack_from(body, 0)[0]
        with self._begin_lock:
            withdrawn = self._begun != target
            if withdrawn:
                self._withdrawn.add(target)
        self._control.send(wire.KIND_WITHDRAW, FLAG_REPLY, seq, (b"\x01" if withdrawn else b"\x00",))

    def _control_loop(self):
        """Answer PING and HEALTH on the control socket. Its end of stream
        means the server is gone: exit even if an execute is running."""
        control = self._control
        while True:
            try:
                frame = control.read_frame()
            except OSError:
                frame = None
            if frame is None:
                self._server_calls.close()
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(0)
            kind, flags, seq, body = frame
            if flags & FLAG_REPLY:
                self._server_calls.deliver(flags, seq, body)
            elif kind == wire.KIND_PING:
                control.send(wire.KIND_PING, FLAG_REPLY, seq)
                codec = self._codec
                if codec is not None:
                    # Between batches too: a region the client unregistered
                    # and unlinked is unmapped here once no array uses it.
                    codec.prune_regions()
            elif kind == wire.KIND_HEALTH:
                self._request_health(seq)
            elif kind == wire.KIND_WITHDRAW and len(body) >= 4:
                self._withdraw(seq, body)
            elif kind == wire.KIND_CANCEL:
                if len(body) >= 4:
                    self._batches.cancel(seq, wire.U32.unpack_from(body, 0)[0])
            else:
                control.send(kind, FLAG_REPLY | FLAG_ERROR, seq, (ModelFailure(
                    "protocol", "frame kind %d does not belong on the control socket" % kind).body(),))

    def _reply(self, kind, seq, obj):
        self._conn.send(kind, FLAG_REPLY, seq, (json.dumps(obj).encode(),))

    def _reply_control(self, seq, obj):
        self._control.send(wire.KIND_HEALTH, FLAG_REPLY, seq, (json.dumps(obj).encode(),))

    def _fail(self, kind, seq, failure):
        self._conn.send(kind, FLAG_REPLY | FLAG_ERROR, seq, (failure.body(),))

    # --- user code -------------------------------------------------------

    def _call(self, op, fn, *args):
        """Call user code; run it on the event loop if it is a coroutine."""
        try:
            result = fn(*args)
            if type(result) is not list and _is_awaitable(result):
                result = self._run_async(result)
            return result
        except BaseException as e:  # noqa: BLE001 - SystemExit from a model is a failure too
            raise _raised(op, e) from None

    def _init(self, seq, body):
        if self._model is not None:
            raise ModelFailure("initialize", "the model is already initialized")
        req = json.loads(bytes(body))
        model_file = req["model_file"]
        args = {k: str(v) for k, v in req["args"].items()}
        self._instance_name = args.get("model_instance_name", "")
        try:
            config = json.loads(args.get("model_config") or "{}")
            self._decoupled = bool((config.get("model_transaction_policy") or {}).get("decoupled", False))
        except ValueError as e:
            raise ModelFailure("initialize", "model_config is not JSON: %s" % e) from None

        try:
            import numpy  # noqa: F401, PLC0415
        except BaseException as e:  # noqa: BLE001
            raise ModelFailure("import numpy", numpy_missing(e), e) from None
        try:
            from .tensors import Codec  # noqa: PLC0415 - needs numpy

            self._codec = Codec(int(req.get("shm_threshold") or 0) if self._conn.passes_fds else 0)
            sys.modules["triton_python_backend_utils"]._connect(self._server_calls, args)
            from .calls import Calls  # noqa: PLC0415 - needs numpy

            self._calls = Calls(self._conn, self._demux, self._codec)
            sys.modules["triton_python_backend_utils"]._set_server(self._calls)
        except BaseException as e:  # noqa: BLE001
            raise _raised("import triton_python_backend_utils", e) from None

        try:
            cls = model_class(model_file)
        except NoModelClass as e:
            raise ModelFailure("import model.py", str(e)) from None
        except BaseException as e:  # noqa: BLE001
            raise _raised("import model.py", e) from None
        if not callable(getattr(cls, "execute", None)):
            raise ModelFailure("import model.py", "TritonPythonModel in %s has no execute method" % model_file)
        model = self._call("TritonPythonModel()", cls)
        init = getattr(model, "initialize", None)
        if init is not None:
            self._call("initialize", init, args)

        hook_name = ""
        for name in _HOOK_NAMES:
            if callable(getattr(model, name, None)):
                hook_name = name
                break
        self._model = model
        self._hook = getattr(model, hook_name) if hook_name else None
        self._hook_name = hook_name
        self._ready = True
        self._calls.live = True
        self._reply(wire.KIND_INIT, seq, {"has_health_hook": bool(hook_name), "hook_name": hook_name})

    def _execute(self, seq, body):
        # The output arena the server lent with the batch, if any (a frame
        # without descriptors is a plain bytearray).
        region = None if type(body) is bytearray else body.out_region
        try:
            self._execute_batch(seq, body, region)
        finally:
            if region is not None:
                os.close(region)

    def _execute_batch(self, seq, body, region):
        if not self._ready:
            raise ModelFailure("execute", "execute before initialize returned")
        try:
            requests = self._codec.decode_requests(body)
        except Exception as e:  # noqa: BLE001
            raise _raised("decode requests", e) from None
        # The client regions the batch passed (outputs may go straight there).
        regions = self._codec.take_regions()
        # Large outputs in memory files of the stub's own, sent with the reply.
        files = [] if self._flags & wire.FLAG_OUT_FILES and self._conn.passes_fds else None
        batch = Batch(seq, requests, self._decoupled, self._conn, self._codec, self._batches)
        self._batches.add(batch)
        try:
            if self._decoupled:
                self._execute_decoupled(seq, batch, requests)
                return
            parts = self._execute_default(seq, batch, requests, region, regions, files)
        except BaseException:
            # The error reply ends every request of the batch.
            batch.close_all()
            for fd in files or ():
                os.close(fd)
            raise
        # The batch's arrays die here unless the model, or a response sender
        # still open, kept some; only then may the server reuse its input
        # arena (internal/ipc/arena.go).
        requests = batch = None
        flags = FLAG_REPLY
        if self._codec.inputs_released():
            flags |= wire.FLAG_INPUTS_RELEASED
        if regions is None or regions.release_files():
            flags |= wire.FLAG_FILES_RELEASED
        self._conn.send(wire.KIND_EXECUTE, flags, seq, parts, files or ())  # send closes files

    def _execute_decoupled(self, seq, batch, requests):
        try:
            result = self._model.execute(requests)
        except BaseException as e:  # noqa: BLE001
            raise _raised("execute", e) from None
        if _is_awaitable(result):
            # Not waited for: the instance takes its next batch while the
            # coroutine runs (Triton's async execute for decoupled models).
            self._run_detached(batch, result)
        elif result is not None:
            raise ModelFailure("execute", self._must_return_none())
        self._conn.send(wire.KIND_EXECUTE, FLAG_REPLY, seq,
                        self._codec.encode_responses([None] * len(requests), requests))

    def _must_return_none(self):
        return ("Python model '%s' is using the decoupled mode and the execute function must return None."
                % self._instance_name)

    def _execute_default(self, seq, batch, requests, region, regions=None, files=None):
        n = len(requests)
        calls = self._calls
        token = calls.enter(seq)
        try:
            result = self._call("execute", self._model.execute, requests)
        finally:
            calls.leave(seq, token)
        if result is None and any(r._sender is not None for r in requests):
            result = [None] * n  # the requests answer through their senders
        if not isinstance(result, (list, tuple)):
            raise ModelFailure(
                "execute",
                "execute returned %s, want a list of %d InferenceResponse" % (type(result).__name__, n))
        if len(result) != n:
            raise ModelFailure("execute", "execute returned %d responses for %d requests" % (len(result), n))
        resp_type = sys.modules["triton_python_backend_utils"].InferenceResponse
        for req in requests:
            if req._sender is not None:
                out = self._settle_senders(batch, requests, list(result), resp_type)
                check = None  # checked
                break
        else:
            # No request took its response sender (the common case): every
            # response must be an InferenceResponse, which encoding checks
            # as it goes.
            out, check = result, resp_type
            batch.close_all()
        codec = self._codec
        try:
            return codec.encode_responses(out, requests, region, regions, files, check=check)
        except codec.BadResponse as e:
            if e.response is None:
                raise ModelFailure(
                    "execute",
                    "execute returned None for request %d, which did not take its response sender" % e.index) from None
            raise ModelFailure(
                "execute",
                "execute returned %s at index %d, want InferenceResponse" % (type(e.response).__name__, e.index)) from None
        except Exception as e:  # noqa: BLE001
            raise _raised("encode responses", e) from None

    def _settle_senders(self, batch, requests, out, resp_type):
        """Check execute's responses when requests took their response
        senders; those that answered through them become None."""
        for i, r in enumerate(out):
            req = requests[i]
            if r is None:
                if req._sender is None:
                    raise ModelFailure(
                        "execute",
                        "execute returned None for request %d, which did not take its response sender" % i)
                continue  # answers, or answered, through its sender
            if not isinstance(r, resp_type):
                raise ModelFailure(
                    "execute",
                    "execute returned %s at index %d, want InferenceResponse" % (type(r).__name__, i))
            if req._sender is not None and batch.sent(i):
                # The sender already sent this request's one response; as in
                # Triton the returned one is dropped, and it ends the request.
                print("vigil_stub: execute returned a response for request %d, which already sent one "
                      "through its response sender; the returned one is dropped" % i, file=sys.stderr)
                out[i] = None
                if not batch.is_closed(i):
                    try:
                        batch.send(i, None, True)
                    except Exception:  # noqa: BLE001 - the connection is gone
                        pass
                continue
            batch.answered(i)
        return out

    def _run_detached(self, batch, coro):
        """Run a decoupled model's coroutine execute without waiting for it.
        If it raises, or returns something other than None, every request
        of the batch still open gets the error as its FINAL response."""
        loop = self._event_loop()

        async def run():
            return await coro

        def done(fut):
            try:
                result = fut.result()
            except BaseException as e:  # noqa: BLE001
                text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                print("vigil_stub: async execute raised:\n%s" % text, file=sys.stderr, flush=True)
                batch.fail_open("Failed to process the request(s) for model '%s', message: %s: %s"
                                % (self._instance_name, type(e).__name__, e))
                return
            if result is not None:
                batch.fail_open(self._must_return_none())

        import asyncio  # noqa: PLC0415

        asyncio.run_coroutine_threadsafe(run(), loop).add_done_callback(done)

    def _finalize(self, seq, body):
        model = self._model
        fin = getattr(model, "finalize", None) if model is not None else None
        if self._calls is not None:
            self._calls.live = False
        if fin is not None:
            self._call("finalize", fin)
        self._reply(wire.KIND_FINALIZE, seq, {})

    # --- health thread ----------------------------------------------------

    def _request_health(self, seq):
        if not self._ready:
            self._reply_control(seq, {"ok": False, "detail": "initialize has not returned"})
            return
        if self._hook is None:
            self._reply_control(seq, {"ok": True, "detail": "the model has no health hook"})
            return
        with self._hook_lock:
            self._hook_waiters.append(seq)
            if self._hook_running:
                return
            self._hook_running = True
        self._hook_go.put(None)

    def _health_loop(self):
        while True:
            self._hook_go.get()
            ok, detail, tb = self._check_hook()
            reply = {"ok": ok, "detail": detail}
            if tb:
                reply["traceback"] = tb
            with self._hook_lock:
                waiters, self._hook_waiters = self._hook_waiters, []
                self._hook_running = False
            for seq in waiters:
                self._reply_control(seq, reply)

    def _check_hook(self):
        name = self._hook_name
        try:
            result = self._hook()
            if _is_awaitable(result):
                result = self._run_async(result)
        except BaseException as e:  # noqa: BLE001
            return False, "%s raised %s: %s" % (name, type(e).__name__, e), _format_traceback(e)
        try:
            ok = bool(result)
        except BaseException as e:  # noqa: BLE001 - e.g. a numpy array
            return False, "%s returned %s, whose truth value raised %s: %s" % (
                name, type(result).__name__, type(e).__name__, e), _format_traceback(e)
        if not ok:
            return False, "%s returned %r" % (name, result), ""
        return True, "", ""

    # --- asyncio ----------------------------------------------------------

    def _event_loop(self):
        import asyncio  # noqa: PLC0415 - only models with coroutines pay for it

        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="vigil-asyncio", daemon=True).start()
                self._loop = loop
            return self._loop

    def _run_async(self, awaitable):
        import asyncio  # noqa: PLC0415

        loop = self._event_loop()

        calls = self._calls
        parent = calls.parent() if calls is not None else 0

        async def wait():
            if parent:
                calls.adopt(parent)  # BLS calls in the coroutine know their batch
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), loop).result()
