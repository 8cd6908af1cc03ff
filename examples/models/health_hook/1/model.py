"""Doubles its input, and reports its own health through is_healthy().

The model declares itself unhealthy while a file named UNHEALTHY exists in
its model directory: `touch examples/models/health_hook/UNHEALTHY` and watch
/readyz?verbose take the instance out of traffic and restart it.
"""

import os

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.flag = os.path.join(args["model_repository"], "UNHEALTHY")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x * 2)]))
        return responses

    def is_healthy(self):
        return not os.path.exists(self.flag)
