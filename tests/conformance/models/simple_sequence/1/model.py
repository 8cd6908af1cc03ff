"""simple_sequence: OUTPUT = READY * (INPUT + START), what Triton's example
clients expect of the model of that name."""

import numpy as np

import triton_python_backend_utils as pb_utils


def value(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy().astype(np.int32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            out = value(request, "READY") * (value(request, "INPUT") + value(request, "START"))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out)]))
        return responses
