"""A decoupled model for the response-sender tests. Each request's "mode"
parameter picks the behaviour; input N (INT32 [1]) is a count."""

import json
import threading
import time

import numpy as np

import triton_python_backend_utils as pb_utils


def _out(i):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], dtype=np.float32))])


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(cfg):
            raise pb_utils.TritonModelException("stream needs the decoupled policy")

    def execute(self, requests):
        for request in requests:
            mode = json.loads(request.parameters()).get("mode", "thread")
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            sender = request.get_response_sender()
            assert request.get_response_sender() is sender
            if mode == "raise":
                raise ValueError("intentional error")
            if mode == "return":
                return [_out(0)]
            if mode == "sync":
                for i in range(n):
                    sender.send(_out(i))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            threading.Thread(target=getattr(self, "_" + mode), args=(request, sender, n), daemon=True).start()
        return None

    def _thread(self, request, sender, n):
        for i in range(n):
            sender.send(_out(i))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _final_with_last(self, request, sender, n):
        for i in range(n - 1):
            sender.send(_out(i))
        sender.send(_out(n - 1), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _until_cancelled(self, request, sender, n):
        # Streams until the client goes away, then ends as Triton's README
        # asks: an error response with CANCELLED, and FINAL.
        i = 0
        deadline = time.monotonic() + 30
        while not request.is_cancelled() and time.monotonic() < deadline:
            sender.send(_out(i))
            i += 1
            time.sleep(0.005)
        assert sender.is_cancelled() == request.is_cancelled()
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _after_final(self, request, sender, n):
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        try:
            sender.send(_out(0))
        except pb_utils.TritonModelException as e:
            print("after final: %s" % e, flush=True)

    def _bad_flags(self, request, sender, n):
        msgs = []
        for args, kwargs in (((), {"flags": 2}), ((), {}), (("not a response",), {})):
            try:
                sender.send(*args, **kwargs)
            except pb_utils.TritonModelException as e:
                msgs.append(str(e))
        sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.zeros(1, np.float32))], parameters={"msgs": " | ".join(msgs)}),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
