"""Logs its input at every pb_utils.Logger level, and answers with the
model name the request reports."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pb_utils.Logger.log_info("initialize of " + args["model_name"])

    def execute(self, requests):
        logger = pb_utils.Logger
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()[0].decode()
            logger.log_info("info " + text)
            logger.log_warn("warning " + text)
            logger.log_error("error " + text)
            logger.log_verbose("verbose " + text)
            logger.log("plain " + text, logger.WARNING)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("MODEL_NAME", np.array([request.model_name().encode()], dtype=np.object_))]))
        return responses
