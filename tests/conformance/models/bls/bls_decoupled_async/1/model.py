"""Written to the shape of python_backend's examples/bls_decoupled async
model: two async_exec(decoupled=True) calls to square_int32 gathered with
asyncio.gather, summing OUT over both response streams. SUM is 2*IN*IN. The example
accumulates in an int64 array, which vigil refuses against the declared
TYPE_INT32; this copy accumulates in int32."""

import asyncio

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            pending = []
            for _ in range(2):
                infer_request = pb_utils.InferenceRequest(
                    model_name="square_int32",
                    inputs=[pb_utils.get_input_tensor_by_name(request, "IN")],
                    requested_output_names=["OUT"],
                )
                pending.append(infer_request.async_exec(decoupled=True))
            streams = await asyncio.gather(*pending)
            response_sum = np.array([0], dtype=np.int32)
            for infer_responses in streams:
                for infer_response in infer_responses:
                    if infer_response.has_error():
                        raise pb_utils.TritonModelException(infer_response.error().message())
                    if len(infer_response.output_tensors()) > 0:
                        response_sum += pb_utils.get_output_tensor_by_name(infer_response, "OUT").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", response_sum)]))
        return responses
