"""A default-mode (not decoupled) model that answers through the response
sender, as Triton allows since 24.06. The "mode" parameter picks how."""

import json
import threading

import numpy as np

import triton_python_backend_utils as pb_utils


def _out(v):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([v], dtype=np.float32))])


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            mode = json.loads(request.parameters()).get("mode", "return")
            sender = request.get_response_sender() if mode != "none" else None
            if mode == "return":
                out.append(_out(1))
            elif mode == "inside":
                sender.send(_out(2), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                out.append(None)
            elif mode == "thread":
                def later(s=sender):
                    s.send(_out(3))
                    s.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                threading.Thread(target=later, daemon=True).start()
                out.append(None)
            elif mode == "final_first":
                try:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                except pb_utils.TritonModelException as e:
                    out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
            elif mode == "two":
                sender.send(_out(4))
                try:
                    sender.send(_out(5))
                except pb_utils.TritonModelException as e:
                    print("second send: %s" % e, flush=True)
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                out.append(None)
            elif mode == "none":
                out.append(None)
        return out
