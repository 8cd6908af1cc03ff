"""Triton Python backend utilities, as provided by the vigil stub.

This module mirrors the parts of Triton's ``triton_python_backend_utils`` that
a model running in a single process can use: tensors, requests, responses,
errors, response senders (decoupled models), type conversions and config
look-ups. Tensors always live in CPU memory as numpy arrays. BLS (calling
other models) and custom metrics are not available; using them raises
TritonModelException.
"""

import json
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
        if not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if triton_dtype is None:
            datatype = _datatype_of(numpy_array.dtype)
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


class InferenceRequest:
    """One request of the batch handed to execute()."""

    __slots__ = ("_inputs", "_request_id", "_correlation_id", "_requested_output_names",
                 "_parameters", "_model_name", "_model_version", "_flags",
                 "_batch", "_index", "_sender")

    def __init__(self, inputs=None, request_id="", correlation_id=0, requested_output_names=None,
                 parameters=None, model_name="", model_version=-1, flags=0, **_ignored):
        self._inputs = list(inputs or [])
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._requested_output_names = list(requested_output_names or [])
        self._parameters = parameters
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        # Set by the stub for requests it received from the server: the
        # batch they came in and their place in it (see vigil_stub.batch).
        self._batch = None
        self._index = 0
        self._sender = None

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

    def model_name(self):
        return self._model_name

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

    def exec(self, *args, **kwargs):
        raise TritonModelException("business logic scripting (BLS) is not supported by vigil")

    async def async_exec(self, *args, **kwargs):
        raise TritonModelException("business logic scripting (BLS) is not supported by vigil")


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
        if t.name() == name:
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


class Logger:
    """Triton's pb_utils.Logger: lines go to the stub's stderr, which the server captures."""

    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3

    _LEVELS = {0: "INFO", 1: "WARNING", 2: "ERROR", 3: "VERBOSE"}

    @staticmethod
    def log(message, level=0):
        print("%s %s" % (Logger._LEVELS.get(level, "INFO"), message), file=sys.stderr, flush=True)

    @staticmethod
    def log_info(message):
        Logger.log(message, Logger.INFO)

    @staticmethod
    def log_warn(message):
        Logger.log(message, Logger.WARNING)

    @staticmethod
    def log_error(message):
        Logger.log(message, Logger.ERROR)

    @staticmethod
    def log_verbose(message):
        Logger.log(message, Logger.VERBOSE)
