"""A decoupled model for the streaming tests. A request sends N responses
(OUT = 0, 1, ...; N < 0: until cancelled) GAP_MS apart from a thread, then
FINAL. With STALL_AFTER=k it stops responding after k responses, as a
wedged model would. When it sees request.is_cancelled() it writes
cancelled-<request id> next to the model directory and ends."""

import os
import threading
import time

import numpy as np

import triton_python_backend_utils as pb_utils


def _int(request, name, default):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else int(t.as_numpy()[0])


class TritonPythonModel:
    def initialize(self, args):
        self.dir = args["model_repository"]

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.respond, args=(request,), daemon=True).start()
        return None

    def respond(self, request):
        n = _int(request, "N", 1)
        gap = _int(request, "GAP_MS", 0) / 1000
        stall = _int(request, "STALL_AFTER", -1)
        sender = request.get_response_sender()
        i = 0
        while n < 0 or i < n:
            if request.is_cancelled():
                with open(os.path.join(self.dir, "cancelled-" + request.request_id()), "w") as f:
                    f.write("%d\n" % i)
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            if i == stall:
                time.sleep(3600)
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], dtype=np.int32))]))
            i += 1
            time.sleep(gap)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
