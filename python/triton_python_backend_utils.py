"""Triton Python backend utilities, as provided by the vigil stub.

This module mirrors Triton's ``triton_python_backend_utils``: tensors,
requests, responses, errors, response senders (decoupled models), type
conversions, config look-ups, BLS (InferenceRequest.exec / async_exec), the
model-loading API (load_model, unload_model, is_model_ready), Logger, custom
metrics (MetricFamily, Metric) and ModelConfig for auto_complete_config.
Tensors always live in CPU memory as numpy arrays.
"""

import json
import os
import struct
import sys

import numpy as np

# TRITONSERVER_ResponseCompleteFlag.
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
# TRITONSERVER_RequestFlag and TRITONSERVER_RequestReleaseFlag.
TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

# TRITONSERVER_RequestFlag: request.flags() of a request in a sequence.
TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2

# Triton's data type codes (model_config.proto DataType, which
# TRITONSERVER_DataType follows for these types).
TYPE_INVALID = 0
TYPE_BOOL = 1
TYPE_UINT8 = 2
TYPE_UINT16 = 3
TYPE_UINT32 = 4
TYPE_UINT64 = 5
TYPE_INT8 = 6
TYPE_INT16 = 7
TYPE_INT32 = 8
TYPE_INT64 = 9
TYPE_FP16 = 10
TYPE_FP32 = 11
TYPE_FP64 = 12
TYPE_STRING = 13
TYPE_BF16 = 14

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

# Open Inference Protocol datatype names by Triton type code, and back.
_CODE_TO_DATATYPE = {
    TYPE_BOOL: "BOOL",
    TYPE_UINT8: "UINT8",
    TYPE_UINT16: "UINT16",
    TYPE_UINT32: "UINT32",
    TYPE_UINT64: "UINT64",
    TYPE_INT8: "INT8",
    TYPE_INT16: "INT16",
    TYPE_INT32: "INT32",
    TYPE_INT64: "INT64",
    TYPE_FP16: "FP16",
    TYPE_FP32: "FP32",
    TYPE_FP64: "FP64",
    TYPE_STRING: "BYTES",
    TYPE_BF16: "BF16",
}
_DATATYPE_TO_CODE = {v: k for k, v in _CODE_TO_DATATYPE.items()}

_CODE_TO_NUMPY = {
    TYPE_BOOL: np.bool_,
    TYPE_UINT8: np.uint8,
    TYPE_UINT16: np.uint16,
    TYPE_UINT32: np.uint32,
    TYPE_UINT64: np.uint64,
    TYPE_INT8: np.int8,
    TYPE_INT16: np.int16,
    TYPE_INT32: np.int32,
    TYPE_INT64: np.int64,
    TYPE_FP16: np.float16,
    TYPE_FP32: np.float32,
    TYPE_FP64: np.float64,
    TYPE_STRING: np.object_,
}

# numpy dtype (kind, itemsize) to OIP datatype, for numeric arrays.
_KIND_SIZE_TO_DATATYPE = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


# Fast path of _datatype_of, keyed by dtype.str (e.g. "<f4"), which numpy
# computes in C; both byte orders map to the same datatype.
_DTYPE_STR_TO_DATATYPE = {}
for (_kind, _size), _name in _KIND_SIZE_TO_DATATYPE.items():
    for _order in "<>|":
        _DTYPE_STR_TO_DATATYPE["%s%s%d" % (_order, _kind, _size)] = _name
_DTYPE_STR_TO_DATATYPE["|O"] = "BYTES"
del _kind, _size, _name, _order


# The datatypes of the dtypes seen by Tensor(), keyed by the dtype itself
# (bounded: a model uses a few).
_DTYPE_TO_DATATYPE = {}


def _datatype_of(dtype):
    """The OIP datatype name for a numpy dtype, or None if it has none."""
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(dtype)
    name = _DTYPE_STR_TO_DATATYPE.get(dtype.str)
    if name is not None:
        return name
    if dtype.kind in "OSU":
        return "BYTES"
    if dtype.name == "bfloat16":  # ml_dtypes.bfloat16, if the model uses it
        return "BF16"
    return None


def triton_to_numpy_type(data_type):
    """The numpy type for a Triton type code (None if there is none)."""
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type):
    """The Triton type code for a numpy type or dtype (None if there is none)."""
    try:
        dtype = np.dtype(data_type)
    except TypeError:
        return None
    name = _datatype_of(dtype)
    if name is None or (name == "BYTES" and dtype.kind == "U"):
        return None
    return _DATATYPE_TO_CODE[name]


def triton_string_to_numpy(triton_type_string):
    """The numpy type for a config data type such as "TYPE_FP32"."""
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor):
    """Serialize a BYTES numpy array into Triton's length-prefixed form.

    Returns a 1-D uint8 array holding, for each element in C order, a 4-byte
    little-endian length and the element's bytes (str elements are encoded
    as UTF-8). Returns an empty tuple for an empty array and None for a
    non-BYTES array, as Triton does.
    """
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype.kind not in "OS":
        return None
    return np.frombuffer(_serialize_bytes(input_tensor), dtype=np.uint8)


def deserialize_bytes_tensor(encoded_tensor):
    """Split serialized BYTES data into a 1-D numpy object array of bytes."""
    return _deserialize_bytes(memoryview(bytes(encoded_tensor)))


def _serialize_bytes(array):
    pack = struct.Struct("<I").pack
    parts = []
    for obj in array.reshape(-1, order="C"):
        if isinstance(obj, bytes):
            b = obj
        elif isinstance(obj, str):
            b = obj.encode("utf-8")
        elif isinstance(obj, (bytearray, memoryview)):
            b = bytes(obj)
        else:
            b = str(obj).encode("utf-8")
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def _deserialize_bytes(view):
    unpack = struct.Struct("<I").unpack_from
    items = []
    off = 0
    end = len(view)
    while off < end:
        if end - off < 4:
            raise ValueError("BYTES data truncated in the length prefix of element %d" % len(items))
        (n,) = unpack(view, off)
        off += 4
        if n > end - off:
            raise ValueError("BYTES element %d declares %d bytes, only %d remain" % (len(items), n, end - off))
        items.append(bytes(view[off:off + n]))
        off += n
    out = np.empty(len(items), dtype=np.object_)
    for i, b in enumerate(items):
        out[i] = b
    return out


class TritonModelException(Exception):
    """An error a model raises (or that the utilities raise) to fail."""

    def __init__(self, msg):
        super().__init__(msg)
        self._msg = msg

    def message(self):
        return self._msg


class TritonError(Exception):
    """An error for one response: InferenceResponse(error=TritonError(...)).

    The code is one of the class attributes below (Triton's
    TRITONSERVER_Error_Code values); the server maps it to an HTTP status
    and gRPC code.
    """

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    _NAMES = {
        0: "UNKNOWN",
        1: "INTERNAL",
        2: "NOT_FOUND",
        3: "INVALID_ARG",
        4: "UNAVAILABLE",
        5: "UNSUPPORTED",
        6: "ALREADY_EXISTS",
        7: "CANCELLED",
    }

    def __init__(self, msg, code=INTERNAL):
        super().__init__(msg)
        self._msg = msg
        self._code = code

    def __str__(self):
        return "" if self._msg is None else str(self._msg)

    def message(self):
        return self._msg

    def code(self):
        return self._code

    def code_name(self):
        """The code's name, e.g. "INVALID_ARG" (vigil extension)."""
        return self._NAMES.get(self._code, "UNKNOWN")


class Tensor:
    """A named tensor backed by a numpy array in CPU memory."""

    __slots__ = ("_name", "_array", "_datatype")

    def __init__(self, name, numpy_array, triton_dtype=None):
        """A tensor named name holding numpy_array.

        triton_dtype (a type code such as TYPE_FP32) reinterprets the array's
        bytes as that type; with TYPE_BF16 the array holds the raw 16-bit
        patterns (any 2-byte dtype), since numpy has no bfloat16.
        """
        if type(numpy_array) is not np.ndarray and not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if triton_dtype is None:
            dtype = numpy_array.dtype
            datatype = _DTYPE_TO_DATATYPE.get(dtype)
            if datatype is None:
                datatype = _datatype_of(dtype)
                if datatype is not None and len(_DTYPE_TO_DATATYPE) < 64:
                    _DTYPE_TO_DATATYPE[dtype] = datatype
        else:
            datatype = _CODE_TO_DATATYPE.get(triton_dtype)
            if datatype == "BF16":
                if numpy_array.dtype.itemsize != 2:
                    raise TritonModelException(
                        "tensor %r: TYPE_BF16 needs a 2-byte dtype, got %s" % (name, numpy_array.dtype))
            elif datatype is not None:
                want = np.dtype(_CODE_TO_NUMPY[triton_dtype])
                if numpy_array.dtype != want:
                    numpy_array = numpy_array.view(want)
        if datatype is None:
            raise TritonModelException(
                "tensor %r: numpy dtype %s has no Triton datatype" % (name, numpy_array.dtype))
        self._name = name
        self._array = numpy_array
        self._datatype = datatype

    @classmethod
    def _wrap(cls, name, array, datatype):
        """Build a tensor without validation (used by the stub)."""
        t = cls.__new__(cls)
        t._name = name
        t._array = array
        t._datatype = datatype
        return t

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array

    def shape(self):
        return list(self._array.shape)

    def triton_dtype(self):
        """The Triton type code, e.g. TYPE_FP32 (11)."""
        return _DATATYPE_TO_CODE[self._datatype]

    def datatype(self):
        """The Open Inference Protocol datatype name, e.g. "FP32" (vigil extension)."""
        return self._datatype

    def is_cpu(self):
        return True

    def to_dlpack(self):
        return self._array.__dlpack__()

    @staticmethod
    def from_dlpack(name, dlpack_object):
        """Build a tensor from an object implementing __dlpack__ (CPU only)."""
        return Tensor(name, np.from_dlpack(dlpack_object))

    def __repr__(self):
        return "Tensor(%r, %s%s)" % (self._name, self._datatype, list(self._array.shape))


# Memory types for PreferredMemory (the Python backend's own enum, not
# TRITONSERVER_MemoryType). vigil keeps every tensor in CPU memory.
TRITONSERVER_MEMORY_GPU = 0
TRITONSERVER_MEMORY_CPU = 1
_MEMORY_DEFAULT = 2


class PreferredMemory:
    """Where a BLS call would like its outputs: InferenceRequest(preferred_memory=...)."""

    def __init__(self, preferred_memory_type, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    """A request's trace (InferenceRequest(trace=...)); vigil does not trace, so it has no context."""

    def __init__(self, context=None):
        self._context = context

    def get_context(self):
        return self._context


# The stub's connection to the server (vigil_stub.calls.Calls), through
# which BLS calls and model control go; set when the stub loads a model.
_server = None


def _set_server(server):
    global _server
    _server = server


def _need_server(what):
    if _server is None:
        raise TritonModelException("%s needs the vigil stub: it is only available in a model the server runs" % what)
    return _server


_REQUIRED = object()


class InferenceRequest:
    """A request: one of the batch handed to execute(), or one a model
    builds to call another model (BLS) with exec() or async_exec().

    The constructor takes Triton's arguments, all by keyword:
    InferenceRequest(request_id="", correlation_id=0, inputs, requested_output_names,
    model_name, model_version=-1, flags=0, timeout=0, preferred_memory=..., trace=...,
    parameters=None). correlation_id and flags reach the callee as a client's
    sequence_id, sequence_start and sequence_end do; timeout is in microseconds.
    """

    __slots__ = ("_inputs", "_request_id", "_correlation_id", "_requested_output_names",
                 "_parameters", "_model_name", "_model_version", "_flags", "_timeout",
                 "_batch", "_index", "_sender")

    def __init__(self, request_id="", correlation_id=0, inputs=_REQUIRED, requested_output_names=_REQUIRED,
                 model_name=_REQUIRED, model_version=-1, flags=0, timeout=0, preferred_memory=None,
                 trace=None, parameters=None):
        for arg, value in (("inputs", inputs), ("requested_output_names", requested_output_names),
                           ("model_name", model_name)):
            if value is _REQUIRED:
                raise TypeError("InferenceRequest() missing required keyword argument %r" % arg)
        if isinstance(model_name, (bytes, bytearray)):
            model_name = bytes(model_name).decode("utf-8")  # an element of a BYTES tensor, as Triton accepts it
        if not isinstance(request_id, str):
            raise TritonModelException("InferenceRequest: request_id must be a str, got %s" % type(request_id).__name__)
        if not isinstance(model_name, str) or not model_name:
            raise TritonModelException("InferenceRequest: model_name must be a non-empty str, got %r" % (model_name,))
        if isinstance(correlation_id, bool) or not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        if isinstance(correlation_id, int) and not 0 <= correlation_id < 1 << 64:
            raise TritonModelException("InferenceRequest: correlation_id %d is not a uint64" % correlation_id)
        if not isinstance(inputs, (list, tuple)):
            raise TritonModelException("InferenceRequest: inputs must be a list of Tensor, got %s" % type(inputs).__name__)
        for t in inputs:
            if t is None:
                raise TritonModelException(
                    "Input tensor for request with id '%s' and model name '%s' should not be empty." % (request_id, model_name))
            if not isinstance(t, Tensor):
                raise TritonModelException("InferenceRequest: input %r is a %s, want Tensor" % (t, type(t).__name__))
        if not isinstance(requested_output_names, (list, tuple)):
            raise TritonModelException("InferenceRequest: requested_output_names must be a list of str, got %s" % (
                type(requested_output_names).__name__))
        names = []
        for n in requested_output_names:
            if not isinstance(n, str):
                raise TritonModelException("InferenceRequest: requested output name %r is not a str" % (n,))
            if not n:
                raise TritonModelException(
                    "Requested output name for request with id '%s' and model name '%s' should not be empty." % (
                        request_id, model_name))
            if n not in names:
                names.append(n)
        if isinstance(model_version, bool) or not isinstance(model_version, int) or model_version < -1 or model_version == 0:
            raise TritonModelException("InferenceRequest: model_version must be -1 (latest) or a version number > 0, got %r" % (
                model_version,))
        if isinstance(flags, bool) or not isinstance(flags, int) or flags & ~3:
            raise TritonModelException(
                "InferenceRequest: flags %r: only TRITONSERVER_REQUEST_FLAG_SEQUENCE_START (1) and "
                "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END (2) are defined" % (flags,))
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise TritonModelException("InferenceRequest: timeout must be a number of microseconds >= 0, got %r" % (timeout,))
        if preferred_memory is not None:
            if not isinstance(preferred_memory, PreferredMemory):
                raise TritonModelException("InferenceRequest: preferred_memory must be a PreferredMemory")
            if preferred_memory.preferred_memory_type == TRITONSERVER_MEMORY_GPU:
                raise TritonModelException(
                    "InferenceRequest: preferred_memory TRITONSERVER_MEMORY_GPU is not available: vigil keeps tensors in CPU memory")
        if trace is not None:
            if not isinstance(trace, InferenceTrace):
                raise TritonModelException("InferenceRequest: trace must be an InferenceTrace")
            if trace.get_context() is not None:
                raise TritonModelException("InferenceRequest: trace with a context is not supported: vigil does not trace requests")
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise TritonModelException("InferenceRequest: parameters must be a dict, got %s" % type(parameters).__name__)
            for k, v in parameters.items():
                if not isinstance(k, str):
                    raise TritonModelException("InferenceRequest: parameter key %r is not a str" % (k,))
                if not isinstance(v, (bool, int, str)):
                    raise TritonModelException(
                        "InferenceRequest: parameter %r is a %s; values must be bool, int or str" % (k, type(v).__name__))
            reserved = sorted({"sequence_id", "sequence_start", "sequence_end"} & set(parameters))
            if reserved:
                raise TritonModelException(
                    "InferenceRequest: parameter %r is reserved: give the sequence as correlation_id and flags" % reserved[0])
        self._inputs = list(inputs)
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._requested_output_names = names
        self._parameters = dict(parameters) if parameters else None
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._batch = None
        self._index = 0
        self._sender = None

    @classmethod
    def _incoming(cls, inputs, request_id, requested_output_names, parameters, correlation_id=0, flags=0,
                  model_name=""):
        """A request of the batch handed to execute (built by the stub)."""
        r = cls.__new__(cls)
        r._inputs = inputs
        r._request_id = request_id
        r._correlation_id = correlation_id
        r._requested_output_names = requested_output_names
        r._parameters = parameters
        r._model_name = model_name
        r._model_version = -1
        r._flags = flags
        r._timeout = 0
        # Set by the stub: the batch the request came in and its place in
        # it (see vigil_stub.batch).
        r._batch = None
        r._index = 0
        r._sender = None
        return r

    def inputs(self):
        return self._inputs

    def request_id(self):
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def requested_output_names(self):
        return self._requested_output_names

    def parameters(self):
        """The request parameters as a JSON object string, as Triton returns them."""
        p = self._parameters
        if p is None:
            return "{}"
        if isinstance(p, str):
            return p
        return json.dumps(p)

    def flags(self):
        return self._flags

    def timeout(self):
        """The BLS timeout in microseconds (0: none)."""
        return self._timeout

    def model_name(self):
        return self._model_name or _stub["model_name"]

    def model_version(self):
        return self._model_version

    def is_cancelled(self):
        """True once the request's client has gone (the server cancelled it)."""
        b = self._batch
        return b is not None and b.is_cancelled(self._index)

    def get_response_sender(self):
        """The request's InferenceResponseSender; the same object on every call."""
        s = self._sender
        if s is None:
            s = self._sender = InferenceResponseSender(self._batch, self._index)
        return s

    def _wire_parameters(self):
        """The parameters a BLS call sends (the sequence travels apart)."""
        p = self._parameters
        if isinstance(p, str):
            p = json.loads(p) if p else None
        return dict(p) if p else {}

    def exec(self, decoupled=False):
        """Run the request on model_name and return its InferenceResponse,
        or with decoupled=True an iterator over the callee's responses.

        A failure of the call (unknown or unready model, the callee's error,
        a timeout) comes back as a response whose has_error() is True.
        """
        return self._exec(decoupled, None)

    def _exec(self, decoupled, parent):
        return _need_server("BLS").infer(self, parent, bool(decoupled))

    def _exec_collected(self, parent):
        # async_exec(decoupled=True): the responses are gathered on the
        # executor thread, so that iterating them in the coroutine never
        # blocks the event loop.
        it = self._exec(True, parent)
        for _ in it:
            pass
        return iter(it)

    def async_exec(self, decoupled=False):
        """An awaitable of exec(), for asyncio.gather in an async execute."""
        import asyncio  # noqa: PLC0415
        import functools  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        server = _need_server("BLS")
        if decoupled:
            return loop.run_in_executor(None, functools.partial(self._exec_collected, server.parent()))
        return loop.run_in_executor(None, functools.partial(self._exec, False, server.parent()))


class InferenceResponseSender:
    """Sends a request's responses: any number for a decoupled model, one for
    a default-mode model, from any thread, before or after execute returns.
    send(flags=TRITONSERVER_RESPONSE_COMPLETE_FINAL) ends the request."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch, index):
        self._batch = batch
        self._index = index

    def send(self, response=None, flags=0):
        if flags != 0 and flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            raise TritonModelException("Unable to send response. Unsupported flag provided.")
        if flags == 0 and response is None:
            raise TritonModelException(
                "Inference Response object must be provided when the response flags is set to zero.")
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(
                "Unable to send response. Expected an InferenceResponse, got %s." % type(response).__name__)
        if self._batch is None:
            raise TritonModelException(
                "Unable to send response. Response sender has no reference to the decoupled state of the model.")
        self._batch.send(self._index, response, flags == TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def is_cancelled(self):
        b = self._batch
        return b is not None and b.is_cancelled(self._index)


class InferenceResponse:
    """The answer to one request: output tensors, or an error."""

    __slots__ = ("_output_tensors", "_err", "_parameters")

    def __init__(self, output_tensors=None, error=None, parameters=None):
        if output_tensors is None:
            output_tensors = []
        if not isinstance(output_tensors, (list, tuple)):
            raise TritonModelException('"output_tensors" must be a list.')
        if isinstance(parameters, str):
            parameters = json.loads(parameters) if parameters else None
        if parameters is not None and not isinstance(parameters, dict):
            raise TritonModelException('"parameters" must be a dict or a JSON object string.')
        self._output_tensors = list(output_tensors)
        self._err = error
        self._parameters = parameters

    @classmethod
    def _wrap(cls, output_tensors, error=None, parameters=None):
        """Build a response without validation (used by the stub)."""
        r = cls.__new__(cls)
        r._output_tensors = output_tensors
        r._err = error
        r._parameters = parameters
        return r

    def output_tensors(self):
        return self._output_tensors

    def has_error(self):
        return self._err is not None

    def error(self):
        return self._err

    def parameters(self):
        return json.dumps(self._parameters or {})


def get_input_tensor_by_name(inference_request, name):
    """The input tensor with this name, or None."""
    for t in inference_request.inputs():
        if (t._name if type(t) is Tensor else t.name()) == name:
            return t
    return None


def get_output_tensor_by_name(inference_response, name):
    """The output tensor with this name, or None."""
    for t in inference_response.output_tensors():
        if t.name() == name:
            return t
    return None


def get_input_config_by_name(model_config, name):
    """The config entry of the input with this name, or None."""
    for entry in model_config.get("input", ()):
        if entry.get("name") == name:
            return entry
    return None


def get_output_config_by_name(model_config, name):
    """The config entry of the output with this name, or None."""
    for entry in model_config.get("output", ()):
        if entry.get("name") == name:
            return entry
    return None


def using_decoupled_model_transaction_policy(model_config):
    """Whether the config asks for the decoupled transaction policy."""
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


# The stub connects the module to the server (_connect) before it imports
# model.py: Logger records and metric operations then go to the server.
# Until then (and in the auto-complete process) Logger writes to stderr and
# metrics raise.
_stub = {"calls": None, "model_name": "", "model_version": ""}

_KIND_LOG = 12
_KIND_METRIC = 13


def _connect(calls, args):
    _stub["calls"] = calls
    _stub["model_name"] = args.get("model_name", "")
    _stub["model_version"] = args.get("model_version", "")


class Logger:
    """Triton's pb_utils.Logger: records go to the server log at their level.

    VERBOSE records are written only when the server runs with
    --log-verbose 1 or more, as in Triton.
    """

    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3

    _LEVELS = {0: "INFO", 1: "WARNING", 2: "ERROR", 3: "VERBOSE"}

    @staticmethod
    def _emit(message, level, depth):
        name = Logger._LEVELS.get(level, "INFO")
        try:
            caller = sys._getframe(depth)
            file, line = caller.f_code.co_filename, caller.f_lineno
        except ValueError:
            file, line = "", 0
        calls = _stub["calls"]
        if calls is not None and calls.notify(_KIND_LOG, {"level": name, "message": str(message),
                                                            "file": file, "line": line}):
            return
        print("%s %s:%d] %s" % (name, os.path.basename(file), line, message), file=sys.stderr, flush=True)

    @staticmethod
    def log(message, level=0):
        Logger._emit(message, level, 2)

    @staticmethod
    def log_info(message):
        Logger._emit(message, Logger.INFO, 2)

    @staticmethod
    def log_warn(message):
        Logger._emit(message, Logger.WARNING, 2)

    @staticmethod
    def log_error(message):
        Logger._emit(message, Logger.ERROR, 2)

    @staticmethod
    def log_verbose(message):
        Logger._emit(message, Logger.VERBOSE, 2)


def _metric_call(prefix, obj):
    calls = _stub["calls"]
    if calls is None:
        raise TritonModelException(prefix + "custom metrics are available in initialize, execute and finalize "
                                   "(the stub is not connected to the server here)")
    try:
        return calls.call(_KIND_METRIC, obj)
    except Exception as e:  # noqa: BLE001 - the server's refusal, as Triton words it
        raise TritonModelException(prefix + str(e)) from None


# Metric kinds, also as MetricFamily.COUNTER etc. (Triton exports both).
COUNTER = 0
GAUGE = 1
HISTOGRAM = 2


class MetricFamily:
    """Triton's pb_utils.MetricFamily: a Prometheus family on the server's /metrics.

    A family is shared by name across the server (the first description
    wins; another kind is refused). Deleting it clears its Metric objects.
    """

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2
    _KINDS = {0: "COUNTER", 1: "GAUGE", 2: "HISTOGRAM"}

    def __init__(self, name, description, kind):
        if name is None or description is None or kind is None:
            raise TritonModelException("Error when creating MetricFamily: name, description and kind must not be None")
        if kind not in MetricFamily._KINDS:
            raise TritonModelException("Error when creating MetricFamily: unknown kind %r" % (kind,))
        self._id = 0
        self._kind = kind
        self._name = str(name)
        # Shared with the family's metrics: False once the family is deleted.
        self._alive = [True]
        reply = _metric_call("Error when creating MetricFamily: ", {
            "op": "family_new", "name": self._name, "description": str(description),
            "kind": MetricFamily._KINDS[kind]})
        self._id = reply["id"]

    def Metric(self, labels=None, buckets=None):  # noqa: N802 - Triton's name
        return Metric(self, labels, buckets)

    def __del__(self):
        if hasattr(self, "_alive"):
            self._alive[0] = False
        calls = _stub["calls"]
        if getattr(self, "_id", 0) and calls is not None:
            try:
                calls.notify(_KIND_METRIC, {"op": "family_delete", "id": self._id})
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class Metric:
    """One labelled series of a MetricFamily."""

    def __init__(self, family, labels=None, buckets=None):
        self._id = 0
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("Failed to create metric. Labels must be a dictionary.")
        if family._kind == MetricFamily.HISTOGRAM:
            if buckets is None:
                raise TritonModelException("Failed to create metric. Missing required buckets.")
            if not isinstance(buckets, list):
                raise TritonModelException("Failed to create metric. Buckets must be a list.")
        elif buckets is not None:
            raise TritonModelException("Failed to create metric. Unexpected buckets found.")
        obj = {"op": "metric_new", "family": family._id}
        if labels:
            obj["labels"] = {str(k): str(v) for k, v in labels.items()}
        if buckets is not None:
            obj["buckets"] = [float(b) for b in buckets]
        # No reference to the family: deleting it clears this metric, as
        # in Triton.
        self._kind = family._kind
        self._alive = family._alive
        self._id = _metric_call("Error when creating Metric: ", obj)["id"]

    _CLEARED = ("Invalid metric operation as the corresponding 'MetricFamily' has been deleted. The 'MetricFamily' "
                "object should be deleted AFTER its corresponding 'Metric' objects have been deleted.")

    def _update(self, op, prefix, value, allowed):
        """Check op here, where the kind is known, with Triton's messages, and
        send it without waiting: updates cost no round trip, and a later
        value() still sees them (the socket keeps their order)."""
        if not self._alive[0]:
            raise TritonModelException(prefix + Metric._CLEARED)
        kind = MetricFamily._KINDS[self._kind]
        if self._kind not in allowed:
            raise TritonModelException(prefix + "TRITONSERVER_METRIC_KIND_%s does not support %s" % (kind, op.capitalize()))
        value = float(value)
        if op == "increment" and self._kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException(prefix + "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented "
                                       "monotonically by non-negative values.")
        calls = _stub["calls"]
        if calls is None or not calls.notify(_KIND_METRIC, {"op": op, "id": self._id, "value": value, "async": True}):
            raise TritonModelException(prefix + "the connection to the server is closed")

    def increment(self, value):
        self._update("increment", "Failed to increment metric value: ", value, (MetricFamily.COUNTER, MetricFamily.GAUGE))

    def set(self, value):
        self._update("set", "Failed to set metric value: ", value, (MetricFamily.GAUGE,))

    def observe(self, value):
        self._update("observe", "Failed to observe metric value: ", value, (MetricFamily.HISTOGRAM,))

    def value(self):
        prefix = "Failed to get metric value: "
        if not self._alive[0]:
            raise TritonModelException(prefix + Metric._CLEARED)
        if self._kind == MetricFamily.HISTOGRAM:
            raise TritonModelException(prefix + "TRITONSERVER_METRIC_KIND_HISTOGRAM does not support Value")
        return _metric_call(prefix, {"op": "value", "id": self._id}).get("value", 0.0)

    def __del__(self):
        calls = _stub["calls"]
        if getattr(self, "_id", 0) and calls is not None:
            try:
                calls.notify(_KIND_METRIC, {"op": "metric_delete", "id": self._id})
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


def get_model_dir():
    """The model's directory (<repository>/<model>)."""
    return _stub.get("model_dir", "")


class ModelConfig:
    """Triton's pb_utils.ModelConfig, handed to auto_complete_config.

    It wraps the model's configuration as a dict in Triton's JSON form
    (proto field names, every field present). The methods check what they
    add against what the configuration says, with Triton's messages; all
    raise ValueError.
    """

    def __init__(self, model_config, model_name=None):
        if isinstance(model_config, (str, bytes)):
            model_config = json.loads(model_config)
        self._model_config = model_config
        self._model_name = model_name if model_name is not None else model_config.get("name", "")

    def as_dict(self):
        """The configuration dict itself (treat it as read-only)."""
        return self._model_config

    def set_max_batch_size(self, max_batch_size):
        current = self._model_config.get("max_batch_size", 0)
        if current > max_batch_size:
            raise ValueError(
                "configuration specified max_batch_size " + str(current)
                + ", but in auto-complete-config function for model '" + self._model_name
                + "' specified max_batch_size " + str(max_batch_size))
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self):
        for sched in ("sequence_batching", "ensemble_scheduling"):
            if sched in self._model_config:
                raise ValueError(
                    "Configuration specified scheduling_choice as '" + sched
                    + "', but auto-complete-config function for model '" + self._model_name
                    + "' tries to set scheduling_choice as 'dynamic_batching'")
        self._model_config.setdefault("dynamic_batching", {})

    def _add_tensor(self, io, tensor, allowed):
        m = self._model_name
        if not isinstance(tensor, dict):
            raise ValueError(io + " in auto-complete-config function for model '" + m + "' must be a dict")
        for key in tensor:
            if key not in allowed:
                names = ", ".join("'%s'" % k for k in allowed[:-1]) + " and '%s'" % allowed[-1]
                raise ValueError(io + " '" + str(tensor.get("name", "")) + "' in auto-complete-config function for model '"
                                 + m + "' contains property other than " + names + ".")
        if "name" not in tensor:
            raise ValueError(io + " in auto-complete-config function for model '" + m + "' is missing 'name' property.")
        for key in ("data_type", "dims"):
            if key not in tensor:
                raise ValueError(io + " '" + tensor["name"] + "' in auto-complete-config function for model '"
                                 + m + "' is missing '" + key + "' property.")
        entries = self._model_config.setdefault(io, [])
        for entry in entries:
            if entry.get("name") != tensor["name"]:
                continue
            cfg_type = entry.get("data_type", "TYPE_INVALID")
            if cfg_type not in ("TYPE_INVALID", "") and cfg_type != tensor["data_type"]:
                raise ValueError("unable to load model '" + m + "', configuration expects datatype " + cfg_type
                                 + " for " + io + " '" + tensor["name"] + "', model provides " + tensor["data_type"])
            cfg_dims = entry.get("dims", [])
            if cfg_dims and list(cfg_dims) != list(tensor["dims"]):
                raise ValueError("model '" + m + "', tensor '" + tensor["name"] + "': the model expects dims "
                                 + str(tensor["dims"]) + " but the model configuration specifies dims " + str(cfg_dims))
            if "optional" in tensor and "optional" in entry and entry["optional"] != tensor["optional"]:
                raise ValueError("model '" + m + "', tensor '" + tensor["name"] + "': the model expects optional "
                                 + str(tensor["optional"]) + " but the model configuration specifies optional "
                                 + str(entry["optional"]))
            entry["data_type"] = tensor["data_type"]
            entry["dims"] = list(tensor["dims"])
            if "optional" in tensor:
                entry["optional"] = tensor["optional"]
            return
        entries.append(dict(tensor, dims=list(tensor["dims"])))

    def add_input(self, input):  # noqa: A002 - Triton's parameter name
        self._add_tensor("input", input, ["name", "data_type", "dims", "optional"])

    def add_output(self, output):
        self._add_tensor("output", output, ["name", "data_type", "dims"])

    def set_model_transaction_policy(self, transaction_policy_dict):
        m = self._model_name
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError("model transaction property in auto-complete-config function for model '" + m
                                 + "' contains property other than 'decoupled'.")
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            new = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != new:
                raise ValueError("trying to change decoupled property in auto-complete-config for model '" + m
                                 + "', which is already set to '" + str(policy["decoupled"]) + "'.")
            policy["decoupled"] = new




def load_model(model_name, config="", files=None):
    """Load (or reload) model_name from the repository, as the repository
    API's load does; only in --model-control-mode explicit."""
    if files is not None and not isinstance(files, dict):
        raise TritonModelException(
            "failed to load model '%s', files should be a dictionary of file paths and file contents" % model_name)
    if not isinstance(config, str):
        raise TritonModelException("failed to load model '%s', config should be a JSON string" % model_name)
    import base64  # noqa: PLC0415

    wire_files = {}
    for k, v in (files or {}).items():
        if not isinstance(v, (bytes, bytearray)):
            raise TritonModelException("failed to load model '%s', file %r: contents must be bytes" % (model_name, k))
        wire_files[k] = base64.b64encode(bytes(v)).decode()
    try:
        _need_server("load_model").control("load", name=model_name, config=config, files=wire_files)
    except TritonModelException as e:
        raise TritonModelException("Failed to load model: %s" % e.message()) from None


def unload_model(model_name, unload_dependents=False):
    """Unload model_name, as the repository API's unload does; only in
    --model-control-mode explicit."""
    try:
        _need_server("unload_model").control("unload", name=model_name, unload_dependents=bool(unload_dependents))
    except TritonModelException as e:
        raise TritonModelException("Failed to unload model: %s" % e.message()) from None


def is_model_ready(model_name, model_version=""):
    """Whether model_name (the version, if given) is ready. A model the
    server does not know raises TritonModelException."""
    version = ""
    if model_version != "":
        try:
            n = int(model_version)
        except (TypeError, ValueError) as e:
            raise TritonModelException(
                "failed to get model version from specified version string '%s' (details: %s), "
                "version should be an integral value > 0" % (model_version, e)) from None
        if n < 0:
            raise TritonModelException(
                "failed to get model version from specified version string '%s', "
                "version should be an integral value > 0" % model_version)
        version = str(n) if n > 0 else ""
    try:
        reply = _need_server("is_model_ready").control("ready", name=model_name, version=version)
    except TritonModelException as e:
        raise TritonModelException("Failed to check model readiness: %s" % e.message()) from None
    return bool(reply.get("ready"))

