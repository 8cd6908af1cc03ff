"""Blocks in execute: writes the "started" file, then waits for "release"."""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        params = json.loads(requests[0].parameters())
        if "started" in params:
            with open(params["started"], "w") as f:
                f.write("started")
        release = params.get("release")
        deadline = time.monotonic() + 120
        while release and not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.005)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("DONE", np.array([1], dtype=np.int32))]) for _ in requests]

    def is_healthy(self):
        return True
