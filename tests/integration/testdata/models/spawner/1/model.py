"""Starts a helper process in initialize and writes its PID to HELPER_PID in
the model directory; vigil must not leave it behind."""

import os
import subprocess

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.helper = subprocess.Popen(["sleep", "1000"])
        with open(os.path.join(args["model_repository"], "HELPER_PID"), "w") as f:
            f.write(str(self.helper.pid))

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]
