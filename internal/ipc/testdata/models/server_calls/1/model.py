"""Logs and uses a custom counter; execute answers with the counter's value
after adding the request's input to it, or with the error it raised."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pb_utils.Logger.log_warn("initializing " + args["model_name"])
        self.family = pb_utils.MetricFamily("calls_total", "calls seen", pb_utils.MetricFamily.COUNTER)
        self.metric = self.family.Metric(labels={"model": args["model_name"]})

    def execute(self, requests):
        out = []
        for r in requests:
            v = float(pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()[0])
            pb_utils.Logger.log_verbose("adding %g for %s" % (v, r.model_name()))
            try:
                self.metric.increment(v)
                result = self.metric.value()
            except pb_utils.TritonModelException as e:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
                continue
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", np.array([result], dtype=np.float32))]))
        return out
