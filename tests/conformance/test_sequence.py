"""Sequences as Triton's clients send them: sequence_id (a number or a
string), sequence_start and sequence_end through tritonclient HTTP and gRPC.
The models live in tests/conformance/models."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from vigil_testlib import Proto, VigilServer, as_bytes_array

MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture(scope="module")
def seq_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("vigil-seq")
    repo = base / "models"
    shutil.copytree(MODELS, repo)
    srv = VigilServer(repo, base / "server.log", label="vigil-seq").start()
    yield srv
    srv.stop()


@pytest.fixture(params=["http", "grpc"])
def seq_proto(request, seq_server):
    p = Proto(request.param, seq_server)
    yield p
    p.close()


def info(proto: Proto, **kw):
    r = proto.infer("sequence_info", [proto.input("INPUT", np.array([7], dtype=np.int32))], **kw)
    (corr,) = as_bytes_array(r.as_numpy("CORRID"))
    (params,) = as_bytes_array(r.as_numpy("PARAMETERS"))
    return corr.decode(), int(r.as_numpy("FLAGS")[0]), json.loads(params)


def test_correlation_id_and_flags_reach_the_model(seq_proto):
    # A model without sequence_batching sees them as Triton's Python backend
    # shows them; the reserved keys are not among its parameters().
    assert info(seq_proto, sequence_id=1000, sequence_start=True) == ("int:1000", 1, {})
    assert info(seq_proto, sequence_id=1000) == ("int:1000", 0, {})
    assert info(seq_proto, sequence_id=1000, sequence_end=True) == ("int:1000", 2, {})
    assert info(seq_proto, sequence_id=5, sequence_start=True, sequence_end=True) == ("int:5", 3, {})
    sid = str(uuid.uuid4())
    assert info(seq_proto, sequence_id=sid, sequence_start=True) == (f"str:{sid}", 1, {})
    assert info(seq_proto) == ("int:0", 0, {})
    if seq_proto.is_http:  # the gRPC client sends sequence_id as int64_param
        assert info(seq_proto, sequence_id=2**64 - 1) == (f"int:{2**64 - 1}", 0, {})
    corr, flags, params = info(seq_proto, sequence_id=9, parameters={"tag": "x"})
    assert (corr, flags, params) == ("int:9", 0, {"tag": "x"})
