"""simple_dyna_sequence: OUTPUT = READY * (INPUT + START + END * int32(CORRID)),
after sleeping execute_delay_ms per execute."""

import json
import time

import numpy as np

import triton_python_backend_utils as pb_utils


def value(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay = int(params.get("execute_delay_ms", {}).get("string_value", "0")) / 1000.0

    def execute(self, requests):
        if self.delay:
            time.sleep(self.delay)
        responses = []
        for request in requests:
            corrid = value(request, "CORRID").astype(np.uint64).astype(np.int32)
            out = value(request, "READY") * (value(request, "INPUT") + value(request, "START")
                                             + value(request, "END") * corrid)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out.astype(np.int32))]))
        return responses
