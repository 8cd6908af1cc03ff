"""Forwards each request to accumulate with its correlation_id() and
flags() (python_backend's "Using BLS with Stateful Models"); a failed call
is raised with the callee's message."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            call = pb_utils.InferenceRequest(
                model_name="accumulate",
                inputs=[pb_utils.get_input_tensor_by_name(request, "INPUT")],
                requested_output_names=["OUTPUT"],
                correlation_id=request.correlation_id(),
                flags=request.flags(),
            )
            reply = call.exec()
            if reply.has_error():
                raise pb_utils.TritonModelException(reply.error().message())
            responses.append(pb_utils.InferenceResponse(reply.output_tensors()))
        return responses
