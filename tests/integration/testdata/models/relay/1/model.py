"""Forwards INPUT0 to sleepy through BLS and returns its OUTPUT0; a failed
call is raised, so the client sees the callee's error."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            resp = pb_utils.InferenceRequest(model_name="sleepy", inputs=r.inputs(),
                                             requested_output_names=["OUTPUT0"]).exec()
            if resp.has_error():
                raise pb_utils.TritonModelException(resp.error().message())
            out.append(pb_utils.InferenceResponse(resp.output_tensors()))
        return out
