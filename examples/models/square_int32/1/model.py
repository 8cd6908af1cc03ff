"""square_int32: Triton's decoupled example, with the same tensors and
behaviour. A request with IN=[n] gets n responses, each OUT=[n], and then a
flag-only FINAL; n ≤ 0 gives no responses. Each request is answered from a
thread of its own, so responses of different requests interleave."""

import json
import threading

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "square_int32 needs model_transaction_policy { decoupled: true } in %s" % args["model_name"])
        for kind, name in (("input", "IN"), ("output", "OUT")):
            get = pb_utils.get_input_config_by_name if kind == "input" else pb_utils.get_output_config_by_name
            entry = get(config, name)
            if entry is None or entry["data_type"] != "TYPE_INT32" or list(entry["dims"]) != [1]:
                raise pb_utils.TritonModelException(
                    "square_int32 expects %s %s as TYPE_INT32 with dims [1], got %s" % (kind, name, entry))
        self.inflight = 0
        self.cv = threading.Condition()

    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            with self.cv:
                self.inflight += 1
            threading.Thread(target=self.respond, args=(request, n), daemon=True).start()
        return None

    def respond(self, request, n):
        sender = request.get_response_sender()
        try:
            for _ in range(n):
                if request.is_cancelled():
                    break
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([n], dtype=np.int32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self.cv:
                self.inflight -= 1
                self.cv.notify_all()

    def finalize(self):
        with self.cv:
            self.cv.wait_for(lambda: self.inflight == 0, timeout=5)
