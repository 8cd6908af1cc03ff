"""Answers with the request's correlation ID ("int:<n>" or "str:<s>"), its
flags and its parameters() JSON."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            corr = request.correlation_id()
            kind = "str" if isinstance(corr, str) else "int"
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("CORRID", np.array([f"{kind}:{corr}".encode()], dtype=np.object_)),
                pb_utils.Tensor("FLAGS", np.array([request.flags()], dtype=np.int32)),
                pb_utils.Tensor("PARAMETERS", np.array([request.parameters().encode()], dtype=np.object_)),
            ]))
        return responses
