"""Drives the model-loading API: OP is "load:<model>", "unload:<model>",
"unload_dependents:<model>" or "ready:<model>[:<version>]"; RESULT is
"ok", "True"/"False", or "raised: <message>"."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            op, _, arg = pb_utils.get_input_tensor_by_name(r, "OP").as_numpy()[0].decode().partition(":")
            try:
                if op == "load":
                    pb_utils.load_model(arg)
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
