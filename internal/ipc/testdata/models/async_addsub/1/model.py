import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def initialize(self, args):
        await asyncio.sleep(0)
        self.loop = asyncio.get_running_loop()

    async def execute(self, requests):
        await asyncio.sleep(0)
        assert asyncio.get_running_loop() is self.loop
        responses = []
        for request in requests:
            in0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", in0 + in1),
                pb_utils.Tensor("OUTPUT1", in0 - in1),
            ]))
        return responses

    async def finalize(self):
        await asyncio.sleep(0)
