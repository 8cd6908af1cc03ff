import json
import sys

import numpy as np
import pytest

import triton_python_backend_utils as pb


@pytest.mark.parametrize("config_type,numpy_type", [
    ("TYPE_BOOL", bool),
    ("TYPE_UINT8", np.uint8),
    ("TYPE_INT64", np.int64),
    ("TYPE_FP16", np.float16),
    ("TYPE_FP32", np.float32),
    ("TYPE_STRING", np.object_),
])
def test_triton_string_to_numpy(config_type, numpy_type):
    assert pb.triton_string_to_numpy(config_type) is numpy_type


def test_type_codes_round_trip():
    for code in range(1, 14):
        np_type = pb.triton_to_numpy_type(code)
        assert pb.numpy_to_triton_type(np_type) == code
    assert pb.triton_to_numpy_type(11) is np.float32
    assert pb.numpy_to_triton_type(np.bytes_) == 13
    assert pb.numpy_to_triton_type(np.complex64) is None
    assert pb.triton_to_numpy_type(99) is None
    assert pb.TYPE_BF16 == 14


def test_tensor():
    t = pb.Tensor("X", np.zeros((2, 3), dtype=np.float32))
    assert t.name() == "X"
    assert t.shape() == [2, 3]
    assert t.triton_dtype() == pb.TYPE_FP32
    assert t.as_numpy().dtype == np.float32
    assert pb.Tensor("S", np.array([b"a"], dtype=np.object_)).triton_dtype() == pb.TYPE_STRING
    with pytest.raises(pb.TritonModelException):
        pb.Tensor("C", np.zeros(2, dtype=np.complex64))
    # triton_dtype reinterprets the bytes, as Triton's constructor does.
    v = pb.Tensor("V", np.zeros(2, dtype=np.uint32), triton_dtype=pb.TYPE_FP32)
    assert v.as_numpy().dtype == np.float32 and v.triton_dtype() == pb.TYPE_FP32
    with pytest.raises(pb.TritonModelException):
        pb.Tensor("B", np.zeros(2, dtype=np.float32), triton_dtype=pb.TYPE_BF16)


def test_request_and_lookups():
    x = pb.Tensor("X", np.arange(3, dtype=np.int32))
    req = pb.InferenceRequest._incoming([x], "r", ["Y"], '{"a": 1}')
    assert pb.get_input_tensor_by_name(req, "X") is x
    assert pb.get_input_tensor_by_name(req, "nope") is None
    assert req.request_id() == "r"
    assert req.requested_output_names() == ["Y"]
    assert json.loads(req.parameters()) == {"a": 1}
    assert pb.InferenceRequest._incoming([], "", [], None).parameters() == "{}"
    assert req.correlation_id() == 0
    assert req.is_cancelled() is False
    with pytest.raises(pb.TritonModelException, match="needs the vigil stub"):
        req.exec()


def test_response_and_error():
    y = pb.Tensor("Y", np.ones(1, dtype=np.float64))
    resp = pb.InferenceResponse(output_tensors=[y])
    assert not resp.has_error()
    assert pb.get_output_tensor_by_name(resp, "Y") is y
    assert pb.get_output_tensor_by_name(resp, "Z") is None
    err = pb.TritonError("bad", pb.TritonError.INVALID_ARG)
    resp = pb.InferenceResponse(error=err)
    assert resp.has_error() and resp.error().message() == "bad" and resp.error().code() == 3
    assert resp.output_tensors() == []
    assert pb.TritonError("x").code() == pb.TritonError.INTERNAL
    codes = [pb.TritonError.UNKNOWN, pb.TritonError.INTERNAL, pb.TritonError.NOT_FOUND, pb.TritonError.INVALID_ARG,
             pb.TritonError.UNAVAILABLE, pb.TritonError.UNSUPPORTED, pb.TritonError.ALREADY_EXISTS,
             pb.TritonError.CANCELLED]
    assert codes == list(range(8))
    with pytest.raises(pb.TritonModelException):
        pb.InferenceResponse(output_tensors="not a list")
    assert pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1


def test_config_lookups():
    cfg = {"input": [{"name": "A", "data_type": "TYPE_FP32"}], "output": [{"name": "B", "data_type": "TYPE_INT8"}]}
    assert pb.get_input_config_by_name(cfg, "A")["data_type"] == "TYPE_FP32"
    assert pb.get_input_config_by_name(cfg, "B") is None
    assert pb.get_output_config_by_name(cfg, "B")["data_type"] == "TYPE_INT8"
    assert pb.get_output_config_by_name({}, "B") is None
    assert not pb.using_decoupled_model_transaction_policy(cfg)


def test_bytes_serialization():
    arr = np.array([b"", b"ab", "é"], dtype=np.object_)
    flat = pb.serialize_byte_tensor(arr)
    assert flat.dtype == np.uint8
    back = pb.deserialize_bytes_tensor(flat.tobytes())
    assert list(back) == [b"", b"ab", "é".encode()]
    assert pb.serialize_byte_tensor(np.array([], dtype=np.object_)) == ()
    with pytest.raises(ValueError):
        pb.deserialize_bytes_tensor(b"\x05\x00\x00\x00ab")


class _FakeCalls:
    """Stands in for the stub's connection to the server."""

    def __init__(self):
        self.sent = []
        self.next_id = 0
        self.refuse = False

    def notify(self, kind, obj):
        self.sent.append((kind, obj))
        return True

    def call(self, kind, obj):
        self.sent.append((kind, obj))
        if obj["op"] in ("family_new", "metric_new"):
            self.next_id += 1
            return {"id": self.next_id}
        if obj["op"] == "value" and self.refuse:
            raise RuntimeError("refused by the server")
        return {"value": 4.0}


@pytest.fixture
def connected():
    calls = _FakeCalls()
    pb._connect(calls, {"model_name": "m", "model_version": "1"})
    yield calls
    pb._connect(None, {})


def test_logger_sends_level_file_and_line(connected):
    pb.Logger.log_error("boom")
    line = sys._getframe().f_lineno - 1
    kind, rec = connected.sent[-1]
    assert kind == 12
    assert rec == {"level": "ERROR", "message": "boom", "file": __file__, "line": line}
    pb.Logger.log("x", pb.Logger.VERBOSE)
    assert connected.sent[-1][1]["level"] == "VERBOSE"


def test_logger_without_server_writes_stderr(capsys):
    pb.Logger.log_warn("early")
    assert "WARNING test_utils.py:" in capsys.readouterr().err


def test_metric_checks_and_prefixes(connected):
    fam = pb.MetricFamily("n", "d", pb.MetricFamily.HISTOGRAM)
    with pytest.raises(pb.TritonModelException, match="^Failed to create metric. Missing required buckets.$"):
        fam.Metric()
    with pytest.raises(pb.TritonModelException, match="Labels must be a dictionary"):
        fam.Metric(labels=[("a", "b")], buckets=[1])
    with pytest.raises(pb.TritonModelException, match="Buckets must be a list"):
        fam.Metric(buckets=(1, 2))
    m = fam.Metric(labels={"a": 1}, buckets=[1, 2])
    assert connected.sent[-1][1] == {"op": "metric_new", "family": 1, "labels": {"a": "1"}, "buckets": [1.0, 2.0]}
    family = pb.MetricFamily("c", "d", pb.COUNTER)
    counter = family.Metric()
    assert counter.value() == 4.0
    counter.increment(2)
    assert connected.sent[-1][1] == {"op": "increment", "id": 4, "value": 2.0, "async": True}
    with pytest.raises(pb.TritonModelException, match="^Failed to increment metric value: TRITONSERVER_METRIC_KIND_COUNTER "
                                                      "can only be incremented monotonically"):
        counter.increment(-1)
    with pytest.raises(pb.TritonModelException, match="^Failed to set metric value: TRITONSERVER_METRIC_KIND_COUNTER does not support Set$"):
        counter.set(1)
    with pytest.raises(pb.TritonModelException, match="HISTOGRAM does not support Value"):
        m.value()
    connected.refuse = True
    with pytest.raises(pb.TritonModelException, match="^Failed to get metric value: refused by the server$"):
        counter.value()
    del m
    assert connected.sent[-1][1] == {"op": "metric_delete", "id": 2}
    del family
    with pytest.raises(pb.TritonModelException, match="has been deleted"):
        counter.increment(1)


def test_metric_without_server_raises():
    with pytest.raises(pb.TritonModelException, match="Error when creating MetricFamily"):
        pb.MetricFamily("n", "d", pb.GAUGE)


def test_model_name_defaults_to_the_model(connected):
    assert pb.InferenceRequest._incoming([], "", [], None).model_name() == "m"
    assert pb.InferenceRequest(model_name="other", inputs=[], requested_output_names=[]).model_name() == "other"


def _config():
    return pb.ModelConfig({"name": "m", "max_batch_size": 0, "input": [
        {"name": "A", "data_type": "TYPE_FP32", "dims": [4], "optional": False}], "output": []})


def test_model_config_add_and_merge():
    c = _config()
    c.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [4]})
    c.add_input({"name": "B", "data_type": "TYPE_INT32", "dims": [-1]})
    c.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [4]})
    c.set_max_batch_size(8)
    c.set_dynamic_batching()
    d = c.as_dict()
    assert [t["name"] for t in d["input"]] == ["A", "B"]
    assert d["max_batch_size"] == 8 and d["dynamic_batching"] == {}
    c.set_model_transaction_policy({"decoupled": False})


@pytest.mark.parametrize("call,message", [
    (lambda c: c.add_input({"name": "A", "data_type": "TYPE_INT8", "dims": [4]}),
     "unable to load model 'm', configuration expects datatype TYPE_FP32 for input 'A', model provides TYPE_INT8"),
    (lambda c: c.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [5]}),
     "model 'm', tensor 'A': the model expects dims [5] but the model configuration specifies dims [4]"),
    (lambda c: c.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [4], "optional": True}),
     "model 'm', tensor 'A': the model expects optional True but the model configuration specifies optional False"),
    (lambda c: c.add_input({"name": "Z", "data_type": "TYPE_FP32", "dims": [4], "format": "x"}),
     "input 'Z' in auto-complete-config function for model 'm' contains property other than "
     "'name', 'data_type', 'dims' and 'optional'."),
    (lambda c: c.add_output({"name": "Z", "dims": [4]}),
     "output 'Z' in auto-complete-config function for model 'm' is missing 'data_type' property."),
    (lambda c: c.add_output({"data_type": "TYPE_FP32", "dims": [4]}),
     "output in auto-complete-config function for model 'm' is missing 'name' property."),
    (lambda c: (c.set_max_batch_size(4), c.set_max_batch_size(2)),
     "configuration specified max_batch_size 4, but in auto-complete-config function for model 'm' "
     "specified max_batch_size 2"),
    (lambda c: c.set_model_transaction_policy({"stream": True}),
     "model transaction property in auto-complete-config function for model 'm' contains property other "
     "than 'decoupled'."),
    (lambda c: (c.set_model_transaction_policy({"decoupled": False}), c.set_model_transaction_policy({"decoupled": True})),
     "trying to change decoupled property in auto-complete-config for model 'm', which is already set to 'False'."),
])
def test_model_config_refusals(call, message):
    with pytest.raises(ValueError) as e:
        call(_config())
    assert str(e.value) == message


def test_model_config_dynamic_batching_refused_beside_sequence():
    c = pb.ModelConfig({"name": "m", "sequence_batching": {}, "input": [], "output": []})
    with pytest.raises(ValueError, match="Configuration specified scheduling_choice as 'sequence_batching'"):
        c.set_dynamic_batching()


def test_bls_request_arguments_are_honoured_or_refused_by_name():
    x = pb.Tensor("X", np.arange(3, dtype=np.int32))
    r = pb.InferenceRequest(model_name=np.array([b"m"], dtype=np.object_)[0], inputs=[x],
                            requested_output_names=["A", "B", "A"], correlation_id="s1",
                            flags=pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START | pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END,
                            timeout=250, parameters={"k": 1}, preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU),
                            trace=pb.InferenceTrace())
    assert r.model_name() == "m" and r.requested_output_names() == ["A", "B"] and r.timeout() == 250
    assert r._wire_parameters() == {"k": 1}
    assert (r.correlation_id(), r.flags()) == ("s1", 3)
    with pytest.raises(TypeError, match="'model_name'"):
        pb.InferenceRequest(inputs=[x], requested_output_names=[])
    bad = [
        (dict(inputs=[None]), "Input tensor for request with id '' and model name 'm' should not be empty."),
        (dict(requested_output_names=[""]), "Requested output name for request with id '' and model name 'm' should not be empty."),
        (dict(correlation_id=1.5), "Correlation ID must be integer or string"),
        (dict(flags=4), "flags 4"),
        (dict(timeout=-1), "timeout"),
        (dict(model_version=0), "model_version"),
        (dict(preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_GPU)), "TRITONSERVER_MEMORY_GPU"),
        (dict(trace=pb.InferenceTrace("ctx")), "trace"),
        (dict(parameters={"f": 0.5}), "parameter 'f' is a float"),
        (dict(parameters={"sequence_id": 3}), "parameter 'sequence_id' is reserved"),
    ]
    for override, msg in bad:
        args = dict(model_name="m", inputs=[x], requested_output_names=[])
        args.update(override)
        with pytest.raises(pb.TritonModelException) as info:
            pb.InferenceRequest(**args)
        assert msg in info.value.message(), (override, info.value.message())


def test_model_loading_api_argument_errors():
    with pytest.raises(pb.TritonModelException, match="files should be a dictionary"):
        pb.load_model("m", config="{}", files=[b"x"])
    with pytest.raises(pb.TritonModelException, match="version string 'x'"):
        pb.is_model_ready("m", "x")
    with pytest.raises(pb.TritonModelException, match="version should be an integral value > 0"):
        pb.is_model_ready("m", "-2")


class _FakeControl:
    def __init__(self):
        self.sent = []

    def control(self, op, **kw):
        self.sent.append((op, kw))
        return {}


def test_load_model_sends_config_and_files_as_the_repository_api_takes_them():
    fake = _FakeControl()
    pb._set_server(fake)
    try:
        pb.load_model("m", config='{"backend": "python"}', files={"file:1/model.py": b"\x00src"})
        pb.load_model("n")
    finally:
        pb._set_server(None)
    assert fake.sent == [
        ("load", {"name": "m", "config": '{"backend": "python"}', "files": {"file:1/model.py": "AHNyYw=="}}),
        ("load", {"name": "n", "config": "", "files": {}}),
    ]
    with pytest.raises(pb.TritonModelException, match="config should be a JSON string"):
        pb.load_model("m", config={"backend": "python"})
    with pytest.raises(pb.TritonModelException, match="'file:1/model.py': contents must be bytes"):
        pb.load_model("m", config="{}", files={"file:1/model.py": "text"})
