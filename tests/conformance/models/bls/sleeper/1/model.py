"""add_sub that first sleeps for its request parameter delay_ms (an int),
after logging "slow: sleeping <delay_ms> ms"."""

import json
import sys
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            delay = int(json.loads(r.parameters()).get("delay_ms", 0))
            print("slow: sleeping %d ms" % delay, file=sys.stderr, flush=True)
            time.sleep(delay / 1000)
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
