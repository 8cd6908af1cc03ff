"""Fails in the way each request's "mode" parameter asks for."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        modes = [json.loads(r.parameters()).get("mode", "ok") for r in requests]
        if modes[0] == "raise":
            raise RuntimeError("CUDA error: out of memory")
        if modes[0] == "none":
            return None
        if modes[0] == "short":
            return [pb_utils.InferenceResponse([]) for _ in requests[1:]]
        if modes[0] == "wrong_type":
            return ["not a response" for _ in requests]
        if modes[0] == "exit":
            raise SystemExit(3)
        responses = []
        for mode in modes:
            if mode == "triton_error":
                err = pb_utils.TritonError("input INPUT0 must be positive", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=err))
            elif mode == "bad_dtype":
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("C", np.zeros(2, dtype=np.int32))]))
                responses[-1].output_tensors()[0]._array = np.zeros(2, dtype=np.complex64)
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OK", np.array([1], dtype=np.int32))]))
        return responses
