"""Written to the shape of python_backend's examples/bls_decoupled sync
model: one request per batch; exec(decoupled=True) to square_int32 with the
request's IN, summing OUT over the responses (skipping the empty last one)
and raising on an error response. SUM is IN*IN. The example accumulates
in np.array([0]), an int64 array, which vigil refuses against the declared
TYPE_INT32 (500 naming SUM); this copy accumulates in int32."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            infer_request = pb_utils.InferenceRequest(
                model_name="square_int32",
                inputs=[pb_utils.get_input_tensor_by_name(request, "IN")],
                requested_output_names=["OUT"],
            )
            infer_responses = infer_request.exec(decoupled=True)
            response_sum = np.array([0], dtype=np.int32)
            for infer_response in infer_responses:
                if infer_response.has_error():
                    raise pb_utils.TritonModelException(infer_response.error().message())
                if len(infer_response.output_tensors()) > 0:
                    response_sum += pb_utils.get_output_tensor_by_name(infer_response, "OUT").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", response_sum)]))
        return responses
