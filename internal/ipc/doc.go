// Package ipc is the Go side of the protocol between vigil and a stub
// process, the Python program (python/vigil_stub) that runs one model
// instance.
//
// # Transport
//
// The server creates two Unix stream socketpairs and passes one end of each
// to the stub (exec.Cmd.ExtraFiles): file descriptor 3 is the data socket,
// which carries INIT, EXECUTE and FINALIZE, and file descriptor 4 the control
// socket, which carries PING and HEALTH. The stub is started as
//
//	<python> -u -m vigil_stub --fd 3 --control-fd 4
//
// with the directory returned by python.Install on PYTHONPATH (python.Args
// gives the arguments). The stub's main thread reads the data socket and runs
// each request as it reads it, so a batch crosses no thread hand-off in the
// stub; a control thread reads the control socket, so a ping or a health
// check is answered while a batch runs. The stub exits when it reads end of
// stream on either socket, so closing the server's ends (or the server dying)
// stops it. The server checks
// the interpreter once at start-up with python.Resolve; a stub whose numpy
// import fails anyway reports it as an INIT error that says how to install
// numpy.
//
// # Frames
//
// Both directions carry frames: a 12-byte header, all integers
// little-endian, followed by the body.
//
//	offset size field
//	0      4    body length in bytes (not counting the header)
//	4      1    kind: 1 INIT, 2 EXECUTE, 3 PING, 4 HEALTH, 5 FINALIZE,
//	            6 RESPONSE (stub → server), 7 CANCEL (server → stub),
//	            8 BLS_INFER, 9 BLS_RESPONSE, 10 BLS_CANCEL, 11 MODEL_CONTROL,
//	            12 LOG, 13 METRIC (stub → server), 14 WITHDRAW (server → stub)
//	5      1    flags: 0x01 reply, 0x02 error (only with reply), 0x04,
//	            0x08 and 0x10 see "Large tensors"
//	6      2    number of file descriptors sent with the frame (SCM_RIGHTS,
//	            with its first byte; data socket only)
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
// PING: empty body both ways. The stub's control thread answers it at once,
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
// EXECUTE: one batch, run by the stub's main thread, one batch at a time
// in arrival order. It is the hot path, so its meta is binary rather than
// JSON. Request and reply bodies have the same outline:
//
//	uint32 meta length | meta | tensor data, in meta order
//
// Each tensor's data in the frame starts at an offset from the first byte
// of the frame's body that is a multiple of 16: zero bytes pad the data
// section before it (after the meta, or after the previous tensor's data)
// up to the next multiple of 16. An empty tensor takes no room and no
// padding, nothing follows the last tensor's data, and the data lengths
// in the meta do not count the padding. The offsets count from the frame
// body also where such a body sits inside another (a RESPONSE's after its
// 8-byte prefix, a BLS_INFER's after its header, a BLS_RESPONSE's after
// its flags), so a reader finds the data from the meta alone, and the
// stub's numpy arrays over a received body (whose storage is 16-byte
// aligned) start aligned for every datatype, which numpy's fast loops
// need.
//
// Request meta (u32 = uint32, u8 = uint8, i64 = int64, u64 = uint64):
//
//	u32 number of requests, then per request:
//	  u32 id length | u32 parameters length | u32 number of inputs | u32 number of requested outputs
//	  id (UTF-8) | parameters (a JSON object, or empty when there are none)
//	  per input:  tensor record
//	  per output: u32 name length | name
//	  sequence:   u32 flags | u8 correlation ID kind | u64 numeric ID | u32 string ID length | string ID
//
// Reply meta, one entry per request in request order:
//
//	u32 number of responses, then per response:
//	  u8 status | u32 a | u32 b
//	  status 0 (outputs): a = parameters length, b = number of outputs;
//	                      parameters (JSON object or empty) | b tensor records
//	  status 1 (error):   a = message length, b = code length; message | code
//	  status 2 (streamed): a = b = 0; the request answers through its
//	                      response sender, in RESPONSE frames
//
// The sequence record carries request.flags() (1 SEQUENCE_START, 2
// SEQUENCE_END) and request.correlation_id(): kind 0 means none (the model
// sees 0), 1 the numeric ID (the model sees an int), 2 the string ID (the
// model sees a str).
//
// A tensor record is
//
//	u32 name length | u8 datatype | u8 ndim | name | i64 dims[ndim] | u64 data length
//
// with datatype one of Triton's type codes: 1 BOOL, 2 UINT8, 3 UINT16,
// 4 UINT32, 5 UINT64, 6 INT8, 7 INT16, 8 INT32, 9 INT64, 10 FP16, 11 FP32,
// 12 FP64, 13 BYTES, 14 BF16. Tensor data is the raw little-endian element
// bytes of tensor.Tensor.Data; BYTES tensors use the serialized form (a
// uint32 length before each element). The stub wraps numeric data in numpy
// arrays over the frame (no copy, no per-element work) and turns BYTES
// into numpy object arrays of bytes; outputs go back the same way, with
// numpy object, bytes and str arrays sent as BYTES (str encoded as UTF-8).
// BF16 inputs are ml_dtypes.bfloat16 arrays when ml_dtypes is installed,
// else uint16 arrays of the raw bit patterns; a model returns BF16 with an
// ml_dtypes array or with Tensor(name, raw_uint16_array,
// triton_dtype=TYPE_BF16). When a request names outputs, the stub sends
// only those.
//
// # Large tensors
//
// Tensors of at least DefaultShmThreshold bytes (256 KiB) travel through
// shared memory instead of the socket (shm.go, arena.go). The server keeps
// two arenas per stub, memory files (memfd, sealed at their size) that both
// sides map and that are reused from batch to batch, so that their pages
// are allocated and faulted in once:
//
//   - the input arena: the server copies a batch's large inputs into it and
//     sends its descriptor as the request's descriptor 0; their tensor
//     records have datatype | 0x80 and are followed by u32 descriptor index
//     | u64 offset, and take no room in the data section. The stub hands
//     numpy views of its mapping (writable; the server never reads them
//     back).
//   - the output arena: lent with a request that may have large outputs
//     (flag 0x04 on the EXECUTE request: its last descriptor). The stub
//     copies large outputs into it while they fit and points their records
//     at index 0xFFFFFFFF; an output that is a view of an input (an identity
//     model) points at 0xFFFFFFFE, the input arena, and is not copied at
//     all. Outputs that do not fit go in the frame, and the next output
//     arena is made big enough.
//
// The server copies out-of-band outputs out before it reuses an arena. An
// arena is lent to one batch at a time; while busy, large tensors go
// through the socket. The reply's flag 0x04 says the stub holds no array
// over the input arena any more (the model kept none past execute); without
// it the server gives that arena up and makes a new one, so that an array a
// model kept never changes under it. A batch whose caller gave up gives
// both up. Memory files are reference-counted by the kernel: one that is
// given up, or mapped by a stub that dies, is freed with its last
// descriptor or mapping, so a dead stub leaks nothing. Other descriptor
// indexes refer to the frame's own descriptors, at an offset (so that a
// region holding many tensors, such as a client's shared memory, can be
// passed as it is).
//
// A client's system shared memory travels that way (regions.go): an
// EXECUTE with flag 0x08 passes each region object's descriptor (after the
// input arena's, before the output arena's), its meta starts with a region
// table (u32 count | per region: u32 descriptor index | u64 registration
// id | u8 access, 0 read-only inputs, 1 read-write output rooms, 2 a
// reused server memory file, below), inputs
// in a region point at its descriptor at their offset in the object, and
// every requested output record is followed by u32 descriptor index
// (0xFFFFFFFF: none) | u64 offset | u64 room. The stub hands numpy
// read-only views of a read-only mapping, writes an output that fits its
// room there, and answers with descriptor index 0x80000000 + i for an
// output in the request's descriptor i (written into its room, or a view of
// an input region); the server checks each against what it passed. The
// stub keeps mappings under the registration id (never reused by the
// server) and drops them once the object is unlinked; the server holds the
// request's regions until the reply is in.
//
// A large HTTP body or gRPC request travels the same way, as a region of
// access 2:
// a memory file of the server's (internal/memfile) that it reuses for later
// bodies, passed as a read-only descriptor. The stub maps it privately
// (MAP_PRIVATE, read-write) for the batch alone, so the model gets
// writable arrays whose writes land in pages of the stub's own; an output
// that is a view of it is pointed at only if /proc/self/pagemap shows none
// of its pages written, else sent as usual. After execute the stub lets go
// of the mapping, and the reply's flag 0x08 says no array over any such
// file outlived the batch; without it (the model kept an input, or the
// batch failed) the server never reuses the file, which then lives on in
// the stub's mapping alone. The server reads a view of the same request's
// input in such a file from its own mapping (the file is sealed against
// shrinking), and copies one of another request's.
//
// A batch whose every request takes its large outputs in memory files
// (a BLS call's, whose caller stub receives descriptors; replyfiles.go)
// has flag 0x10 on its EXECUTE. The stub then writes each response's
// numeric outputs of at least the threshold into one memory file it makes
// for that response (memfd "vigil-bls-out", 64-byte aligned offsets,
// sealed F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE), sends the files with
// the reply in response order and points those records at their file's
// descriptor index; BYTES and smaller outputs stay in the frame, and an
// output that is a view of an input region is pointed at as above. The
// server refuses a file without the write and shrink seals, or one that
// two responses share, as a protocol error of the batch; it maps each
// read-only and never copies its bytes (the outputs are tensor.Shared
// views of it). A view of an input region that is a sealed memory file (a
// BLS caller's) is a Shared view of that file, not a copy. The stub's
// RESPONSE frames (response senders) keep their tensors in band.
//
// A status 1 entry is a per-request error: the model returned
// InferenceResponse(error=TritonError(msg, code)), or the response's tensors
// could not be sent. code is a Triton error code name: UNKNOWN, INTERNAL,
// NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS or
// CANCELLED. A whole batch fails with an error reply when execute raised or
// did not return one InferenceResponse per request.
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
// # Frames the stub starts
//
// The stub may send requests of its own on the control socket (flags 0, a
// sequence id of its choosing); the server answers them there with the
// reply flag, so the stub's control thread receives the answer while its
// main thread runs execute.
//
// LOG (12): body {"level": "INFO"|"WARNING"|"ERROR"|"VERBOSE", "message":
// "...", "file": "/abs/model.py", "line": 12}, one pb_utils.Logger call. No
// reply.
//
// METRIC (13): body {"op": ..., ...}, one pb_utils.MetricFamily or Metric
// operation (MetricCall lists the ops and their fields). Reply {"id": n}
// for what was created, {"value": v} for a value, or an error reply
// {"message": "..."} that the stub raises as TritonModelException.
// Deletions (family_delete, metric_delete) are sent without waiting for
// the reply.
//
// RESPONSE and CANCEL: see stream.go. A decoupled model's EXECUTE reply has
// status 2 for every request once execute returned None; its responses
// travel in RESPONSE frames carrying the EXECUTE's sequence id and the
// request's index, sent by any thread of the stub, until each request's
// FINAL. A default-mode model's request that used its response sender has
// status 2 too. CANCEL, on the control socket, marks a request cancelled.
//
// The server may write an EXECUTE while the one before it runs; the stub
// begins it once it has answered the one before. WITHDRAW takes such a
// batch back before it begins: see pipeline.go.
//
// Coroutine initialize, execute, hooks and finalize run on one asyncio event
// loop thread in the stub; a decoupled model's coroutine execute is not
// waited for, so the stub reads the next EXECUTE while it runs.
//
// # Requests the stub makes
//
// A model's BLS calls and model-loading calls are frames the stub starts on
// the data socket (flags 0, a sequence id of the stub's choosing); the
// server answers each with the same kind's reply (or BLS_RESPONSE for
// BLS_INFER) and the stub's sequence id. While execute runs, a thread
// waiting for such an answer reads the data socket itself and keeps any
// other frame for its owner (python/vigil_stub/wire.py Demux).
//
// BLS_INFER: u32 header length | header | an EXECUTE request body holding
// one request (its id, parameters, inputs, requested outputs and sequence
// record). The header is binary: u32 model name length | model name |
// u32 version length | version ("" for the server's choice) | u64 timeout
// in µs (0 for none) | u32 parent (the seq of the EXECUTE the call was made
// under, 0 for none) | u8 decoupled. The server runs it as a request of its
// own (Handler.Infer) and answers with BLS_RESPONSE frames.
//
// BLS_RESPONSE (server to stub, reply flag): u32 flags (0x01 final) | an
// EXECUTE reply body holding one response (outputs, or an error entry with
// message and Triton error code), or none for a flag-only final. A call
// without decoupled gets exactly one, final. Outputs that reached the
// server as memory files (below) are out of band: their records point at
// the frame's descriptors, one per file.
//
// A BLS_INFER's inputs of at least the shm threshold (INIT's
// shm_threshold) travel out of band when the data socket passes
// descriptors: the stub writes them into one memory file for the call, at
// 64-byte aligned offsets, seals it (F_SEAL_SHRINK, F_SEAL_GROW,
// F_SEAL_WRITE) and sends its descriptor with the frame (descriptor 0);
// their records are out of band as in an EXECUTE. The server refuses a
// file without the write and shrink seals, maps it read-only and passes it
// on to the callee's stub as a client region (read-only, with a
// registration id of the top bit and the file's inode number), so the
// callee's model reads the caller's bytes in place; the server closes and
// unmaps it once the call has ended and the callee's reply is in, or, for a
// call that ended with an error (which the callee may not be done with),
// once no tensor viewing it is reachable (callfiles.go). Smaller inputs
// are in band.
//
// The call's large outputs come back the same way (replyfiles.go): the
// callee's EXECUTE has flag 0x10 when every request of its batch is such a
// call, so the callee's stub writes them into sealed memory files of its
// own, one per response; the server maps each read-only and hands it on
// with the BLS_RESPONSE, closing its own descriptor and mapping once the
// frame is written (or could not be: the caller is gone) or the response
// is dropped, so its descriptors stay flat. An identity callee's outputs,
// views of the caller's input file, come back as that file. The caller's
// stub maps each file read-only and hands the model read-only numpy views
// (np.array(x) makes a writable copy); the kernel frees the file once the
// model has dropped them, with no frame to release it. A callee that dies
// mid-reply leaves nothing: the files it made die with it, and those of a
// frame the server did not read whole are closed. Requests that reach a
// stub other than through a stub's call (a client's, an ensemble step's,
// also one a BLS call to an ensemble makes), batches that mix them with
// calls, a decoupled callee's responses (RESPONSE frames) and BYTES
// outputs keep the arenas and the frame as for any request.
//
// BLS_CANCEL (stub to server): empty body, the call's sequence id; the
// server cancels the call.
//
// MODEL_CONTROL: JSON {"op": "load"|"unload"|"ready", "name": ..., "version":
// ..., "config": ..., "files": {"file:1/model.py": <base64>},
// "unload_dependents": bool}; reply {"ready": bool}, or an error reply
// whose message the stub raises.
package ipc
