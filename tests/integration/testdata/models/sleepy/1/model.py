"""Sleeps INPUT0[0] seconds, then echoes its input. While a sleep longer
than zero runs, a file named EXECUTING exists in the model directory."""

import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.marker = os.path.join(args["model_repository"], "EXECUTING")

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if x[0] > 0:
                with open(self.marker, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(float(x[0]))
                os.remove(self.marker)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
