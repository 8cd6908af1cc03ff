"""Accumulates INPUT over a sequence in the implicit state SUM; the END
request's OUTPUT adds int(correlation ID)."""

import numpy as np

import triton_python_backend_utils as pb_utils


def value(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            total = value(request, "SUM_IN") + value(request, "INPUT")
            out = total.copy()
            if value(request, "END")[0][0]:
                out += np.int32(int(value(request, "CORRID")[0][0].decode()))
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", out.astype(np.int32)),
                pb_utils.Tensor("SUM_OUT", total.astype(np.int32)),
            ]))
        return responses
