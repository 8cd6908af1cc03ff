"""An async execute that makes two BLS calls to "target" at once with
async_exec and asyncio.gather, and returns OUT of the first as OUT0 and of
the second as OUT1."""

import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0")
            calls = [pb_utils.InferenceRequest(request_id=str(i), model_name="target", inputs=[x],
                                               requested_output_names=["OUT"]).async_exec() for i in range(2)]
            a, b = await asyncio.gather(*calls)
            for resp in (a, b):
                if resp.has_error():
                    raise pb_utils.TritonModelException(resp.error().message())
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT0", pb_utils.get_output_tensor_by_name(a, "OUT").as_numpy()),
                pb_utils.Tensor("OUT1", pb_utils.get_output_tensor_by_name(b, "OUT").as_numpy()),
            ]))
        return out
