"""Per-model Python environments (EXECUTION_ENV_PATH), with real venvs built by
`python -m venv`: a model with an unpacked environment, models sharing one
tarball (unpacked once), a model without one, and environments that fail the
load with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as thttp

from vigil_testlib import VigilServer, error_of

MODELS = Path(__file__).resolve().parent / "python_api_models"


def make_venv(path: Path, system_site: bool, marker: str | None) -> Path:
    """A venv without pip (fast); with the marker module vigil_env_marker."""
    args = [sys.executable, "-m", "venv", "--without-pip"]
    if system_site:
        args.append("--system-site-packages")  # numpy comes from the interpreter that runs the suite
    subprocess.run(args + [str(path)], check=True, timeout=120)
    if marker is not None:
        site = path / "lib" / f"python{sysconfig.get_python_version()}" / "site-packages"
        (site / "vigil_env_marker.py").write_text(f"WHERE = {marker!r}\n")
    return path


def add_model(repo: Path, name: str, env_path: str | None):
    shutil.copytree(MODELS / "env_probe", repo / name)
    if env_path is not None:
        with open(repo / name / "config.pbtxt", "a") as f:
            f.write('parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "%s" } }\n' % env_path)


def probe(client, model):
    inp = thttp.InferInput("IN", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"?"], dtype=np.object_))
    return json.loads(client.infer(model, [inp]).as_numpy("OUT")[0])


@pytest.fixture(scope="module")
def env_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("vigil-envs")
    repo = base / "models"
    repo.mkdir()
    add_model(repo, "env_dir", "$$TRITON_MODEL_DIRECTORY/env")
    make_venv(repo / "env_dir" / "env", True, "venv in the model directory")
    tarball = base / "packed.tar.gz"
    packed = make_venv(base / "packed", True, "tarball")
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(packed, arcname=".")
    shutil.rmtree(packed)
    for name in ("env_tar_a", "env_tar_b"):
        add_model(repo, name, "$$TRITON_MODEL_DIRECTORY/env.tar.gz")
        shutil.copy(tarball, repo / name / "env.tar.gz")  # same content, two files
    add_model(repo, "plain", None)
    srv = VigilServer(repo, base / "server.log", label="vigil-envs",
                      extra_args=["--execution-env-cache", str(base / "cache")]).start()
    srv.base = base
    yield srv
    srv.stop()


def test_unpacked_env_runs_the_model_with_its_interpreter(env_server):
    out = probe(env_server.http_client(), "env_dir")
    assert out["marker"] == "venv in the model directory"
    assert Path(out["prefix"]) == (env_server.repo / "env_dir" / "env").resolve()


def test_only_that_model_sees_the_environment(env_server):
    out = probe(env_server.http_client(), "plain")
    assert out["marker"].startswith("ImportError")
    assert Path(out["prefix"]) == Path(sys.prefix)


def test_tarball_unpacked_once_by_content(env_server):
    a = probe(env_server.http_client(), "env_tar_a")
    b = probe(env_server.http_client(), "env_tar_b")
    assert a["marker"] == b["marker"] == "tarball"
    assert a["prefix"] == b["prefix"]
    cache = (env_server.base / "cache").resolve()
    assert Path(a["prefix"]).parent == cache
    unpacked = [r for r in env_server.log_records() if r.get("msg") == "execution environment unpacked"]
    assert len(unpacked) == 1, unpacked


@pytest.fixture(scope="module")
def explicit_env_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("vigil-bad-envs")
    repo = base / "models"
    repo.mkdir()
    add_model(repo, "no_numpy", "$$TRITON_MODEL_DIRECTORY/env")
    make_venv(repo / "no_numpy" / "env", False, None)
    add_model(repo, "missing", "$$TRITON_MODEL_DIRECTORY/nowhere")
    add_model(repo, "no_activate", "$$TRITON_MODEL_DIRECTORY/env")
    (repo / "no_activate" / "env" / "bin").mkdir(parents=True)
    srv = VigilServer(repo, base / "server.log", label="vigil-bad-envs",
                      extra_args=["--model-control-mode", "explicit"]).start(wait_ready=False)
    yield srv
    srv.stop()


@pytest.mark.parametrize("model,message", [
    ("no_numpy", "cannot import numpy, which the stub needs"),
    ("missing", "Failed to get the canonical path for"),
    ("no_activate", "The Python environment should contain an 'activate' script."),
])
def test_broken_environment_fails_the_load(explicit_env_server, model, message):
    err = error_of(explicit_env_server.http_client().load_model, model)
    assert str(err.status()) == "400"
    assert "EXECUTION_ENV_PATH" in err.message() and message in err.message()
    index = {m["name"]: m for m in explicit_env_server.http_client().get_model_repository_index()}
    assert index[model]["state"] == "UNAVAILABLE" and message in index[model]["reason"]
