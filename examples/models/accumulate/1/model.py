"""Sums INPUT over a sequence: OUTPUT is the sum so far.

The sum is not kept in this process: the server hands it in as SUM_IN and
takes it back from SUM_OUT (sequence_batching.state), so the model is
written as if it were stateless. request.correlation_id() and
request.flags() say which sequence a request belongs to and whether it
starts or ends it."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            total = (pb_utils.get_input_tensor_by_name(request, "SUM_IN").as_numpy()
                     + pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy())
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", total),
                pb_utils.Tensor("SUM_OUT", total),
            ]))
        return responses
