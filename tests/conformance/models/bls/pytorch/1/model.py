"""Stands in for the BLS examples' PyTorch model with numpy: the same sum
and difference, computed the way a framework model would be called."""

import numpy as np

import triton_python_backend_utils as pb_utils


class _AddSubNet:
    def __call__(self, a, b):
        return np.add(a, b), np.subtract(a, b)


class TritonPythonModel:
    def initialize(self, args):
        self.net = _AddSubNet()

    def execute(self, requests):
        out = []
        for r in requests:
            s, d = self.net(pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy(),
                            pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy())
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", s), pb_utils.Tensor("OUTPUT1", d)]))
        return out
