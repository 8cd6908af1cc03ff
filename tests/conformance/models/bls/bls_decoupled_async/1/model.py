"""The model of python_backend's examples/bls_decoupled (async), as the
example has it: an async execute taking one request (any other count
raises) that starts two async_exec(decoupled=True) calls of square_int32
with the request's IN, awaits both with asyncio.gather, and adds up OUT over
every response of both streams (skipping the empty last ones, raising an
error response's message): SUM is 2*IN*IN. Like the example it accumulates
in np.array([0]), numpy int64, against config.pbtxt's TYPE_INT32: passed
through as INT64, as Triton does, with one warning in the server log."""

import asyncio
import json

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])

    async def execute(self, requests):
        if len(requests) != 1:
            raise pb_utils.TritonModelException("unsupported batch size %d" % len(requests))
        count = pb_utils.get_input_tensor_by_name(requests[0], "IN")
        awaitables = []
        for _ in range(2):
            call = pb_utils.InferenceRequest(model_name="square_int32", inputs=[count], requested_output_names=["OUT"])
            awaitables.append(call.async_exec(decoupled=True))
        streams = await asyncio.gather(*awaitables)
        total = np.array([0])
        for stream in streams:
            for partial in stream:
                if partial.has_error():
                    raise pb_utils.TritonModelException(partial.error().message())
                if len(partial.output_tensors()) > 0:
                    total += pb_utils.get_output_tensor_by_name(partial, "OUT").as_numpy()
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SUM", total)])]

    def finalize(self):
        print("Cleaning up...")
