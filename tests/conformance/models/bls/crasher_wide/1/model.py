"""add_sub for tensors of any length that, when the request parameter crash
is true, kills its own process with SIGKILL while the stub encodes its
reply: after OUTPUT0 (large enough for a memory file) has been taken, as
OUTPUT1's array is asked for."""

import json
import os
import signal

import triton_python_backend_utils as pb_utils


class _Fatal(pb_utils.Tensor):
    __slots__ = ()

    def as_numpy(self):
        os.kill(os.getpid(), signal.SIGKILL)


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            second = _Fatal if json.loads(r.parameters()).get("crash") else pb_utils.Tensor
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b), second("OUTPUT1", a - b)]))
        return out
