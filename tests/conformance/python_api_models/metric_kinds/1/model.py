"""Each request names one metric operation (OP, a JSON list [op, args...]);
the response is {"value": ...} or {"error": "<message>"}."""

import json

import numpy as np

import triton_python_backend_utils as pb_utils

KINDS = {"counter": pb_utils.MetricFamily.COUNTER, "gauge": pb_utils.MetricFamily.GAUGE,
         "histogram": pb_utils.MetricFamily.HISTOGRAM}


class TritonPythonModel:
    def initialize(self, args):
        self.families = {}
        self.metrics = {}

    def run(self, op, *a):
        if op == "family":  # name, kind, description
            self.families[a[0]] = pb_utils.MetricFamily(name=a[0], description=a[2], kind=KINDS[a[1]])
            return None
        if op == "drop_family":
            del self.families[a[0]]
            return None
        if op == "metric":  # key, family, labels, buckets
            self.metrics[a[0]] = self.families[a[1]].Metric(labels=a[2], buckets=a[3])
            return None
        if op == "drop_metric":
            del self.metrics[a[0]]
            return None
        m = self.metrics[a[0]]
        if op == "value":
            return m.value()
        getattr(m, op)(a[1])
        return None

    def execute(self, requests):
        responses = []
        for request in requests:
            cmd = json.loads(pb_utils.get_input_tensor_by_name(request, "OP").as_numpy()[0])
            try:
                out = {"value": self.run(*cmd)}
            except pb_utils.TritonModelException as e:
                out = {"error": str(e)}
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("RESULT", np.array([json.dumps(out).encode()], dtype=np.object_))]))
        return responses
