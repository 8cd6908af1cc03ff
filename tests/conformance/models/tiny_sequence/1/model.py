"""OUTPUT = INPUT + START (a BOOL control)."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy()
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            out = (x + start.astype(np.int32)).reshape(1, 1).astype(np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out)]))
        return responses
