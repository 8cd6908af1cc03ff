"""Server/model health and metadata through tritonclient (SPEC §5, §7)."""

import pytest

from vigil_testlib import CALL_TIMEOUT_S, error_of, http_get

EXAMPLE_MODELS = ["accumulate", "add_sub", "add_sub_chain", "bls_add_sub", "health_hook", "identity", "repeat_int32", "square_int32"]


def test_server_live_and_ready(proto):
    assert proto.client.is_server_live() is True
    assert proto.client.is_server_ready() is True


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
def test_model_ready(proto, model):
    assert proto.client.is_model_ready(model) is True
    assert proto.client.is_model_ready(model, "1") is True


def test_unknown_model_ready_http(http_proto, server):
    # REST documents 404 for an unknown model; tritonclient maps non-200 to False.
    assert http_proto.client.is_model_ready("no_such_model") is False
    status, body = http_get(server.http_addr, "/v2/models/no_such_model/ready")
    assert status == 404
    assert b"no_such_model" in body


def test_unknown_model_ready_grpc(grpc_proto):
    # gRPC ModelReady answers NOT_FOUND for an unknown model.
    err = error_of(grpc_proto.client.is_model_ready, "no_such_model")
    assert str(err.status()) == "StatusCode.NOT_FOUND"
    assert "no_such_model" in err.message()


def test_unknown_version_ready(proto, server):
    if proto.is_http:
        assert proto.client.is_model_ready("add_sub", "2") is False
        status, body = http_get(server.http_addr, "/v2/models/add_sub/versions/2/ready")
        assert status == 404, body
    else:
        err = error_of(proto.client.is_model_ready, "add_sub", "2")
        assert str(err.status()) == "StatusCode.NOT_FOUND"
        assert "add_sub" in err.message()


def test_server_metadata(proto):
    if proto.is_http:
        md = proto.client.get_server_metadata()
    else:
        md = proto.client.get_server_metadata(as_json=True)
    assert md["name"] == "vigil"
    assert md.get("version")
    ext = md["extensions"]
    assert isinstance(ext, list)
    # The Triton extensions tritonclient and perf_analyzer rely on.
    for name in ("binary_tensor_data", "model_repository", "model_configuration", "statistics",
                 "sequence", "sequence(string_id)"):
        assert name in ext, ext


def test_server_metadata_grpc_proto(grpc_proto):
    md = grpc_proto.client.get_server_metadata(client_timeout=CALL_TIMEOUT_S)
    assert md.name == "vigil"
    assert "statistics" in list(md.extensions)


def test_model_metadata_add_sub(proto):
    md = (proto.client.get_model_metadata("add_sub") if proto.is_http
          else proto.client.get_model_metadata("add_sub", as_json=True))
    assert md["name"] == "add_sub"
    assert "1" in md["versions"]
    ins = {t["name"]: t for t in md["inputs"]}
    outs = {t["name"]: t for t in md["outputs"]}
    assert sorted(ins) == ["INPUT0", "INPUT1"]
    assert sorted(outs) == ["OUTPUT0", "OUTPUT1"]
    for t in list(ins.values()) + list(outs.values()):
        assert t["datatype"] == "FP32"
        # max_batch_size > 0: the batch dimension leads as -1 (gRPC JSON renders
        # int64 as strings).
        assert [int(d) for d in t["shape"]] == [-1, 16]


def test_model_metadata_add_sub_grpc_proto(grpc_proto):
    md = grpc_proto.client.get_model_metadata("add_sub", "1")
    assert md.name == "add_sub"
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [
        ("INPUT0", "FP32", [-1, 16]), ("INPUT1", "FP32", [-1, 16])]


def test_model_metadata_identity(proto):
    md = (proto.client.get_model_metadata("identity") if proto.is_http
          else proto.client.get_model_metadata("identity", as_json=True))
    want = {"FP32": "FP32", "FP16": "FP16", "INT32": "INT32", "INT64": "INT64",
            "UINT8": "UINT8", "BOOL": "BOOL", "BYTES": "BYTES"}
    ins = {t["name"]: t for t in md["inputs"]}
    outs = {t["name"]: t for t in md["outputs"]}
    for suffix, dt in want.items():
        assert ins["INPUT_" + suffix]["datatype"] == dt
        assert outs["OUTPUT_" + suffix]["datatype"] == dt
        # max_batch_size 0: no batch dimension is added.
        assert [int(d) for d in ins["INPUT_" + suffix]["shape"]] == [-1]


def test_model_metadata_unknown(proto):
    err = error_of(proto.client.get_model_metadata, "no_such_model")
    assert str(err.status()) == proto.status("not_found")
    assert "no_such_model" in err.message()


def test_model_config_http(http_proto):
    cfg = http_proto.client.get_model_config("add_sub")
    assert isinstance(cfg, dict)
    assert cfg["name"] == "add_sub"
    assert cfg["backend"] == "python"
    assert cfg["max_batch_size"] == 8
    assert [i["name"] for i in cfg["input"]] == ["INPUT0", "INPUT1"]
    for i in cfg["input"]:
        assert i["data_type"] == "TYPE_FP32"
        assert i["dims"] == [16]
    assert [o["name"] for o in cfg["output"]] == ["OUTPUT0", "OUTPUT1"]
    assert sum(g["count"] for g in cfg["instance_group"]) == 2
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    assert "dynamic_batching" in cfg


def test_model_config_grpc(grpc_proto):
    resp = grpc_proto.client.get_model_config("add_sub", client_timeout=CALL_TIMEOUT_S)
    cfg = resp.config
    assert cfg.name == "add_sub"
    assert cfg.backend == "python"
    assert cfg.max_batch_size == 8
    assert [i.name for i in cfg.input] == ["INPUT0", "INPUT1"]
    assert [list(i.dims) for i in cfg.input] == [[16], [16]]
    assert sum(g.count for g in cfg.instance_group) == 2

    js = grpc_proto.client.get_model_config("add_sub", as_json=True)["config"]
    assert js["max_batch_size"] == 8
    assert [int(d) for d in js["input"][0]["dims"]] == [16]
    assert js["input"][0]["data_type"] == "TYPE_FP32"
    assert sum(int(g.get("count", 1)) for g in js["instance_group"]) == 2


def test_model_config_identity_optional_inputs(http_proto):
    cfg = http_proto.client.get_model_config("identity")
    assert cfg["max_batch_size"] == 0
    assert all(i["optional"] is True for i in cfg["input"])
    assert {i["data_type"] for i in cfg["input"]} >= {"TYPE_STRING", "TYPE_BOOL", "TYPE_FP16"}


def test_model_config_unknown(proto):
    err = error_of(proto.client.get_model_config, "no_such_model")
    assert str(err.status()) == proto.status("not_found")
    assert "no_such_model" in err.message()


def test_load_refused_in_mode_none(proto):
    # SPEC §3: in model control mode none the load/unload API is refused.
    for fn in (proto.client.load_model, proto.client.unload_model):
        err = error_of(fn, "identity")
        assert "model control mode" in err.message()
        assert "identity" in err.message()
    assert proto.client.is_model_ready("identity") is True
