"""Forwards each request to add_sub with exec(); its health.yaml declares
the dependency, so its readiness follows add_sub's."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            resp = pb_utils.InferenceRequest(model_name="add_sub", inputs=r.inputs(),
                                             requested_output_names=["OUTPUT0", "OUTPUT1"]).exec()
            if resp.has_error():
                raise pb_utils.TritonModelException(resp.error().message())
            out.append(pb_utils.InferenceResponse(resp.output_tensors()))
        return out
