"""Business Logic Scripting: each request goes on to add_sub through the
server with InferenceRequest.exec(), and add_sub's answer is returned. A
failed call (add_sub unloaded, not ready, failing) is raised, so the client
sees its reason."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            call = pb_utils.InferenceRequest(
                model_name="add_sub",
                inputs=[pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                        pb_utils.get_input_tensor_by_name(request, "INPUT1")],
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                request_id=request.request_id(),
            )
            result = call.exec()
            if result.has_error():
                raise pb_utils.TritonModelException(result.error().message())
            responses.append(pb_utils.InferenceResponse(result.output_tensors()))
        return responses
