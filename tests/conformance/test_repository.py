"""Model repository extension: index, and load/unload in explicit mode."""

import numpy as np
import pytest

from vigil_testlib import Proto, error_of, start_server, wait_until

EXPLICIT = ["--model-control-mode", "explicit", "--load-model", "add_sub"]


def by_name(index):
    return {m["name"]: m for m in index}


def test_index_mode_none(proto):
    idx = by_name(proto.repository_index())
    assert set(idx) == {"accumulate", "add_sub", "add_sub_chain", "bls_add_sub", "health_hook", "identity", "repeat_int32", "square_int32"}
    for m in idx.values():
        assert m["state"] == "READY", m
        assert m["version"] == "1", m


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "vigil-explicit", EXPLICIT)
    yield srv
    srv.stop()


@pytest.fixture(params=["http", "grpc"])
def explicit(request, explicit_server):
    p = Proto(request.param, explicit_server)
    yield p
    p.close()


def test_explicit_startup_state(explicit):
    assert explicit.client.is_server_ready() is True
    assert explicit.client.is_model_ready("add_sub") is True
    idx = by_name(explicit.repository_index())
    # Every model in the repository is listed; only add_sub was loaded.
    assert set(idx) == {"accumulate", "add_sub", "add_sub_chain", "bls_add_sub", "health_hook", "identity", "repeat_int32", "square_int32"}
    assert idx["add_sub"]["state"] == "READY"
    assert idx["health_hook"]["state"] != "READY"


def ready_soon(client, model, want=True, version=""):
    """The model's readiness once it settles on `want` (bounded). Load/unload return
    before the health snapshot catches up (see test_ready_reflects_load_unload_at_once);
    these tests check the end state, not that race."""
    wait_until(lambda: client.is_model_ready(model, version) is want, timeout=5,
               what=f"is_model_ready({model!r}) to be {want}")
    return want


def test_explicit_load_infer_unload(explicit):
    c = explicit.client
    c.load_model("identity")
    assert ready_soon(c, "identity") is True
    assert ready_soon(c, "identity", version="1") is True
    assert by_name(explicit.repository_index())["identity"]["state"] == "READY"

    x = np.array([1, 2, 3], np.int64)
    res = explicit.infer("identity", [explicit.input("INPUT_INT64", x)])
    np.testing.assert_array_equal(res.as_numpy("OUTPUT_INT64"), x)

    c.unload_model("identity")
    assert ready_soon(c, "identity", want=False) is False
    entry = by_name(explicit.repository_index())["identity"]
    assert entry["state"] == "UNAVAILABLE", entry
    assert entry["reason"] == "unloaded", entry
    # An explicit unload is not a readiness failure.
    assert c.is_server_ready() is True
    assert c.is_model_ready("add_sub") is True

    # Requests for the unloaded model are refused as unavailable, naming it.
    err = error_of(explicit.infer, "identity", [explicit.input("INPUT_INT64", x)])
    assert str(err.status()) == explicit.status("unavailable")
    assert "identity" in err.message()


def test_explicit_reload_cycle(explicit):
    c = explicit.client
    for _ in range(2):
        c.load_model("identity")
        assert ready_soon(c, "identity") is True
        c.unload_model("identity")
        assert ready_soon(c, "identity", want=False) is False
    assert c.is_server_ready() is True


def test_ready_reflects_load_unload_at_once(explicit_server):
    http, grpc_ = Proto("http", explicit_server), Proto("grpc", explicit_server)
    stale = []
    try:
        for i in range(16):
            # Alternate which protocol drives the change; check both right after.
            driver = (http, grpc_)[i % 2]
            driver.client.load_model("identity")
            for p in (http, grpc_):
                if p.client.is_model_ready("identity") is not True:
                    stale.append(f"cycle {i}: {p.name} not ready right after "
                                 f"{driver.name} load returned")
            driver.client.unload_model("identity")
            for p in (http, grpc_):
                if p.client.is_model_ready("identity") is not False:
                    stale.append(f"cycle {i}: {p.name} still ready right after "
                                 f"{driver.name} unload returned")
            ready_soon(http.client, "identity", want=False)
    finally:
        http.close()
        grpc_.close()
    assert stale == [], stale


def test_explicit_load_already_loaded_is_ok(explicit):
    c = explicit.client
    c.load_model("add_sub")  # reload of a loaded model succeeds
    assert ready_soon(c, "add_sub") is True
    a = np.ones((2, 16), np.float32)
    res = explicit.infer("add_sub", [explicit.input("INPUT0", a), explicit.input("INPUT1", a)])
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), 2 * a)
    assert c.is_server_ready() is True


# -- loading a model that is not in the repository ------------------------------------
# Each of these gets a private server: the bug poisons the server's readiness.


def test_failed_load_has_tritons_words(explicit):
    """A model whose config.pbtxt is broken: Triton's "failed to load '<m>'", then why."""
    broken = explicit.server.repo / "broken_cfg"
    (broken / "1").mkdir(parents=True, exist_ok=True)
    (broken / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_sise: 2\n')
    err = error_of(explicit.client.load_model, "broken_cfg")
    assert err.message().startswith("failed to load 'broken_cfg'"), err.message()
    assert "max_batch_sise" in err.message()
    assert str(err.status()) == explicit.status("invalid")


@pytest.fixture
def explicit_private(tmp_path_factory):
    srv = start_server(tmp_path_factory, "vigil-explicit-private", EXPLICIT)
    yield srv
    srv.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_unknown_model_status(explicit_private, protocol):
    p = Proto(protocol, explicit_private)
    err = error_of(p.client.load_model, "no_such_model")
    assert "no_such_model" in err.message()
    assert str(err.status()) == p.status("not_found"), (err.status(), err.message())


def test_load_unknown_model_keeps_server_ready(explicit_private):
    p = Proto("http", explicit_private)
    error_of(p.client.load_model, "no_such_model")
    assert p.client.is_server_ready() is True, "server not ready after a failed load of a typo"
    assert "no_such_model" not in by_name(p.repository_index())


def test_unload_after_failed_load_restores_readiness(explicit_private):
    """A model that is in the repository but fails to load takes strict
    readiness down (as in Triton); unloading it gives readiness back."""
    broken = explicit_private.repo / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        'backend: "python"\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    (broken / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights missing')\n"
        "    def execute(self, requests):\n"
        "        return []\n")
    p = Proto("http", explicit_private)
    err = error_of(p.client.load_model, "broken")
    assert "weights missing" in err.message()
    assert p.client.is_server_ready() is False, "a failed load must show in strict readiness"
    p.client.unload_model("broken")
    assert p.client.is_server_ready() is True, "still not ready after unloading the failed model"


def test_unload_unknown_model_not_found(explicit_private):
    for protocol in ("http", "grpc"):
        p = Proto(protocol, explicit_private)
        err = error_of(p.client.unload_model, "never_loaded_model")
        assert str(err.status()) == p.status("not_found"), (err.status(), err.message())
        assert "never_loaded_model" in err.message()
    assert Proto("http", explicit_private).client.is_server_ready() is True
