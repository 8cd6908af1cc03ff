"""auto_complete_config declares INPUT0 as FP32 while config.pbtxt says INT32:
pb_utils.ModelConfig.add_input raises, and the load fails with its message."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]})
        return auto_complete_model_config

    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("never loads")) for _ in requests]
