"""The model of python_backend's examples/bls_decoupled (sync), as the
example has it: it takes one request per execute (any other count raises),
sends IN to the decoupled square_int32 with exec(decoupled=True) asking for
OUT, adds up OUT over the responses (the last, empty one has no outputs)
and raises an error response's message. Like the example it accumulates in
np.array([0]), a numpy int64 array, although config.pbtxt declares SUM as
TYPE_INT32: Triton passes the INT64 tensor through, and so does vigil (the
server logs one warning naming the model, the output and both datatypes)."""

import json

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])

    def execute(self, requests):
        if len(requests) != 1:
            raise pb_utils.TritonModelException("unsupported batch size %d" % len(requests))
        count = pb_utils.get_input_tensor_by_name(requests[0], "IN")
        call = pb_utils.InferenceRequest(model_name="square_int32", inputs=[count], requested_output_names=["OUT"])
        total = np.array([0])
        for partial in call.exec(decoupled=True):
            if partial.has_error():
                raise pb_utils.TritonModelException(partial.error().message())
            if len(partial.output_tensors()) > 0:
                total += pb_utils.get_output_tensor_by_name(partial, "OUT").as_numpy()
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SUM", total)])]

    def finalize(self):
        print("Cleaning up...")
