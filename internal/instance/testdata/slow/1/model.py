import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """initialize sleeps for the model config's init_sleep parameter; execute
    sleeps for INPUT0 seconds and echoes it."""

    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        time.sleep(float(params.get("init_sleep", {}).get("string_value", "0")))

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            time.sleep(float(x.reshape(-1)[0]))
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
