"""Returns every input it is given as the output of the same suffix:
INPUT_FP32 -> OUTPUT_FP32, INPUT_BYTES -> OUTPUT_BYTES, and so on."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = []
            for tensor in request.inputs():
                name = "OUTPUT_" + tensor.name()[len("INPUT_"):]
                outputs.append(pb_utils.Tensor(name, tensor.as_numpy()))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
