"""OUTPUT = SUM_IN + INPUT, which is also the next SUM_IN."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            total = (pb_utils.get_input_tensor_by_name(request, "SUM_IN").as_numpy()
                     + pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy())
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", total),
                pb_utils.Tensor("SUM_OUT", total),
            ]))
        return responses
