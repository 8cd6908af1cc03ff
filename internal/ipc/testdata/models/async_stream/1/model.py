"""An async decoupled model: each request waits DELAY_MS (INT32 [1]) on the
instance's event loop, then sends one response and FINAL."""

import asyncio

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        for request in requests:
            delay = int(pb_utils.get_input_tensor_by_name(request, "DELAY_MS").as_numpy()[0])
            if delay < 0:
                raise RuntimeError("negative delay")
            await asyncio.sleep(delay / 1000)
            request.get_response_sender().send(
                pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([delay], dtype=np.float32))]),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
