"""Drives the model-loading API: OP is "load:<model>", "unload:<model>",
"unload_dependents:<model>", "ready:<model>[:<version>]" or
"load_with:<json>", the JSON holding "name" and load_model's "config"
(a string) and "files" (file path -> text, passed as bytes; a list is
passed as it is); RESULT is "ok", "True"/"False", or "raised: <message>"."""

import json

import numpy as np

import triton_python_backend_utils as pb_utils


def _load_with(arg):
    spec = json.loads(arg)
    files = spec.get("files")
    if isinstance(files, dict):
        files = {k: v.encode() for k, v in files.items()}
    pb_utils.load_model(spec["name"], config=spec.get("config", ""), files=files)


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            op, _, arg = pb_utils.get_input_tensor_by_name(r, "OP").as_numpy()[0].decode().partition(":")
            try:
                if op == "load":
                    pb_utils.load_model(arg)
                    result = "ok"
                elif op == "load_with":
                    _load_with(arg)
                    result = "ok"
                elif op == "unload":
                    pb_utils.unload_model(arg)
                    result = "ok"
                elif op == "unload_dependents":
                    pb_utils.unload_model(arg, unload_dependents=True)
                    result = "ok"
                else:
                    name, _, version = arg.partition(":")
                    result = str(pb_utils.is_model_ready(name, version))
            except pb_utils.TritonModelException as e:
                result = "raised: " + e.message()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", np.array([result], dtype=np.object_))]))
        return out
