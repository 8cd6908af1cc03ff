"""Adds and subtracts its inputs and counts the nanoseconds execute takes in a
custom counter, as Triton's custom_metrics example does."""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.out0 = pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, "OUTPUT0")["data_type"])
        self.out1 = pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, "OUTPUT1")["data_type"])
        family = pb_utils.MetricFamily(
            name="requests_process_latency_ns",
            description="Cumulative time spent processing requests",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.family = family
        self.latency = family.Metric(labels={"model": args["model_name"], "version": args["model_version"]})

    def execute(self, requests):
        start = time.time_ns()
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", (a + b).astype(self.out0)),
                pb_utils.Tensor("OUTPUT1", (a - b).astype(self.out1)),
            ]))
        self.latency.increment(time.time_ns() - start)
        return responses
