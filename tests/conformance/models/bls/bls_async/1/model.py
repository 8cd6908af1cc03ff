"""Written to the shape of python_backend's examples/bls async model: an
async execute starts async_exec() calls to "pytorch" and "add_sub", awaits
them together with asyncio.gather, and returns OUTPUT0 of the first and
OUTPUT1 of the second."""

import asyncio
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])

    async def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")
            pending = []
            for model_name in ["pytorch", "add_sub"]:
                infer_request = pb_utils.InferenceRequest(
                    model_name=model_name,
                    requested_output_names=["OUTPUT0", "OUTPUT1"],
                    inputs=[in_0, in_1],
                )
                pending.append(infer_request.async_exec())
            results = await asyncio.gather(*pending)
            for r in results:
                if r.has_error():
                    raise pb_utils.TritonModelException(r.error().message())
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.get_output_tensor_by_name(results[0], "OUTPUT0"),
                pb_utils.get_output_tensor_by_name(results[1], "OUTPUT1"),
            ]))
        return responses
