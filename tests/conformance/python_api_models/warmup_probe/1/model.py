"""Records every batch it executes; a real request (not a warm-up one) gets
the record as JSON. An input full of 7s raises, to fail a warm-up."""

import json

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.seen = []
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        batch = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
            if np.all(x == 7):
                raise ValueError("sevens are not allowed")
            batch.append({"id": r.request_id(), "shape": list(x.shape), "sum": float(x.sum()),
                          "in_unit_range": bool(np.all((x >= 0) & (x < 1)))})
        self.seen.append(batch)
        fmt = self.config["input"][0]["format"]
        out = json.dumps({"seen": self.seen, "format": fmt}).encode()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("SEEN", np.array([[out]], dtype=np.object_))])
                for _ in requests]
