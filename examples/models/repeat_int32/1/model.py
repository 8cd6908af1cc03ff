"""repeat_int32: Triton's decoupled example, with the same tensors and
behaviour. For each element i of IN the model waits DELAY[i] milliseconds
and then sends one response holding IDX=[i] and OUT=[IN[i]]; after the last
one it sends a flag-only FINAL, so IN of shape [0] gives no responses at all.
execute itself waits WAIT[0] milliseconds and returns None: the responses
come from a thread of the model's own. The optional config parameter
output_num_elements repeats IN[i] that many times in OUT (default 1).

The thread checks request.is_cancelled() between responses and stops early
when the client has gone."""

import json
import threading
import time

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "repeat_int32 needs model_transaction_policy { decoupled: true } in %s" % args["model_name"])
        self.out_dtype = pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, "OUT")["data_type"])
        self.idx_dtype = pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, "IDX")["data_type"])
        params = config.get("parameters", {})
        self.output_num_elements = int(params.get("output_num_elements", {}).get("string_value", "1"))
        self.inflight = 0
        self.cv = threading.Condition()

    def execute(self, requests):
        if len(requests) != 1:
            raise pb_utils.TritonModelException("unsupported batch size %d" % len(requests))
        request = requests[0]
        values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        delays = pb_utils.get_input_tensor_by_name(request, "DELAY").as_numpy()
        wait = pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()
        if values.shape != delays.shape:
            raise pb_utils.TritonModelException(
                "expected IN and DELAY shape to match, got %s and %s." % (list(values.shape), list(delays.shape)))
        with self.cv:
            self.inflight += 1
        threading.Thread(target=self.respond, args=(request, values, delays), daemon=True).start()
        time.sleep(int(wait[0]) / 1000)
        return None

    def respond(self, request, values, delays):
        sender = request.get_response_sender()
        try:
            for i in range(values.shape[0]):
                if request.is_cancelled():
                    break
                time.sleep(int(delays[i]) / 1000)
                out = np.full(self.output_num_elements, values[i], dtype=self.out_dtype)
                idx = np.array([i], dtype=self.idx_dtype)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("IDX", idx), pb_utils.Tensor("OUT", out)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self.cv:
                self.inflight -= 1
                self.cv.notify_all()

    def finalize(self):
        # Let the responses in flight go out first.
        with self.cv:
            self.cv.wait_for(lambda: self.inflight == 0, timeout=5)
