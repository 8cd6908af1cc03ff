// Package ipc is the Go side of the protocol between vigil and a stub
// process, the Python program (python/vigil_stub) that runs one model
// instance.
//
// # Transport
//
// The server creates a Unix stream socketpair and passes one end to the stub
// as file descriptor 3 (exec.Cmd.ExtraFiles); the stub is started as
//
//	<python> -u -m vigil_stub --fd 3
//
// with the directory returned by python.Install on PYTHONPATH. The stub exits
// when it reads end of stream, so closing the server's end (or the server
// dying) stops it.
//
// # Frames
//
// Both directions carry frames: a 12-byte header, all integers
// little-endian, followed by the body.
//
//	offset size field
//	0      4    body length in bytes (not counting the header)
//	4      1    kind: 1 INIT, 2 EXECUTE, 3 PING, 4 HEALTH, 5 FINALIZE
//	5      1    flags: 0x01 reply, 0x02 error (only with reply)
//	6      2    reserved, zero
//	8      4    sequence id
//
// The server sends requests (flags 0) with a sequence id of its choosing,
// unique among its outstanding requests; the stub answers each exactly once
// with a frame of the same kind and sequence id and the reply flag. Replies
// may arrive in any order, so a ping or a health check is answered while an
// execute is running. A reply to a sequence id the server no longer waits for
// (its caller gave up) is dropped.
//
// An error reply (flags 0x03) has a JSON body describing what failed:
//
//	{"op": "execute", "type": "RuntimeError", "message": "CUDA error: out of memory",
//	 "traceback": "Traceback (most recent call last): ...", "code": "INTERNAL"}
//
// op names the step that failed ("import numpy", "import model.py",
// "TritonPythonModel()", "initialize", "decode requests", "execute",
// "encode responses", "finalize", "stub", "protocol"); type is the Python
// exception class and is absent when nothing raised (for instance when
// execute returned None). It becomes a *ModelError.
//
// # Messages
//
// PING: empty body both ways. The stub's reader thread answers it at once,
// so it proves the interpreter is scheduling threads, not that the model is
// idle.
//
// INIT: body {"model_file": "/abs/<model>/<version>/model.py", "args": {...}}
// where args holds Triton's initialize() keys, all strings: model_config (the
// config as JSON), model_name, model_version, model_repository (the model's
// directory), model_instance_kind, model_instance_name,
// model_instance_device_id. The stub imports numpy (a failure says how to
// install it), puts the version directory on sys.path, imports model.py,
// instantiates TritonPythonModel and calls initialize(args). Reply
// {"has_health_hook": bool, "hook_name": "is_healthy"|"is_ready"|""};
// is_healthy wins when a model defines both.
//
// EXECUTE: one batch, run by the stub's execute thread, one batch at a time
// in arrival order. Request and reply bodies have the same layout:
//
//	uint32 meta length | meta (UTF-8 JSON) | tensor data, concatenated in meta order
//
// Request meta:
//
//	{"r": [{"id": "req-1", "p": {request parameters},
//	        "i": [{"n": "INPUT0", "d": "FP32", "s": [16], "b": 64}, ...],
//	        "o": ["OUTPUT0"]}]}
//
// Reply meta, one entry per request in request order:
//
//	{"r": [{"o": [{"n": "OUTPUT0", "d": "FP32", "s": [16], "b": 64}],
//	        "p": {response parameters, optional}},
//	       {"o": [], "e": {"message": "bad input", "code": "INVALID_ARG"}}]}
//
// n, d, s and b are a tensor's name, datatype, shape and data length in
// bytes. Tensor data is the raw little-endian element bytes of
// tensor.Tensor.Data; BYTES tensors use the serialized form (a uint32 length
// before each element). The stub wraps numeric data with numpy.frombuffer
// (no per-element work) and turns BYTES into numpy object arrays of bytes;
// outputs go back the same way, with numpy object, bytes and str arrays sent
// as BYTES (str encoded as UTF-8). When a request names outputs, the stub
// sends only those. "e" is a per-request error (the model returned
// InferenceResponse(error=TritonError(msg, code))); code is a Triton error
// code name: UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE,
// UNSUPPORTED, ALREADY_EXISTS or CANCELLED. A whole batch fails with an error
// reply when execute raised or did not return one InferenceResponse per
// request.
//
// HEALTH: empty request; reply {"ok": bool, "detail": "..."}. The stub calls
// the hook on its own thread, single-flight: requests that arrive while a
// call runs share its result. An exception gives ok false and detail
// "is_healthy raised ValueError: ..."; a falsy result gives "is_healthy
// returned False". The server enforces timeouts. Before initialize has
// returned the answer is ok false.
//
// FINALIZE: empty request; the stub runs it after any queued executes, calls
// finalize() if the model defines it, replies ({} or an error reply) and
// exits.
//
// Coroutine initialize, execute, hooks and finalize run on one asyncio event
// loop thread in the stub.
package ipc
