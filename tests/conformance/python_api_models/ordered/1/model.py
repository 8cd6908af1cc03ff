"""Sleeps for the longest SLEEP_MS of the batch, then answers every request
with the time execute finished (time.time_ns). Before a sleep it touches
<model>/sleeping, so a test knows a slow request is running."""

import os
import time

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.marker = os.path.join(args["model_repository"], "sleeping")

    def execute(self, requests):
        ms = max(int(pb_utils.get_input_tensor_by_name(r, "SLEEP_MS").as_numpy().max()) for r in requests)
        if ms:
            open(self.marker, "w").close()
        time.sleep(ms / 1000.0)
        done = np.array([[time.time_ns()]], dtype=np.int64)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("DONE_NS", done)]) for _ in requests]
