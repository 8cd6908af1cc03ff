"""Forwards INPUT0/INPUT1 to the model named by MODEL_NAME with exec(),
with TIMEOUT_US as the call's timeout when given, and its own request
parameters as the call's. Two parameters steer it instead of being
forwarded: forward_all (send every input, MODEL_NAME included, so that
bls_call can call itself) and decoupled (use exec(decoupled=True)).

A failed call is not raised: its message and code come back as ERROR and
CODE, and a line "bls_call result: <code>: <message>" goes to the log."""

import json
import sys

import numpy as np

import triton_python_backend_utils as pb_utils


def _error(message, code):
    print("bls_call result: %s: %s" % (code, message), file=sys.stderr, flush=True)
    return pb_utils.InferenceResponse([
        pb_utils.Tensor("ERROR", np.array([message], dtype=np.object_)),
        pb_utils.Tensor("CODE", np.array([code], dtype=np.object_)),
    ])


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            target = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0]
            timeout = pb_utils.get_input_tensor_by_name(request, "TIMEOUT_US")
            params = json.loads(request.parameters())
            forward_all = params.pop("forward_all", False)
            decoupled = params.pop("decoupled", False)
            if forward_all:
                inputs = request.inputs()
            else:
                inputs = [pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                          pb_utils.get_input_tensor_by_name(request, "INPUT1")]
            call = pb_utils.InferenceRequest(
                model_name=target,
                inputs=inputs,
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                timeout=int(timeout.as_numpy()[0]) if timeout is not None else 0,
                parameters=params,
            )
            try:
                result = call.exec(decoupled=decoupled)
            except pb_utils.TritonModelException as e:
                responses.append(_error("exec raised: " + e.message(), "RAISED"))
                continue
            if decoupled:
                # The iterator's responses: an error, or the last with outputs.
                got = [r for r in result]
                errors = [r for r in got if r.has_error()]
                with_outputs = [r for r in got if r.output_tensors()]
                result = errors[0] if errors else with_outputs[-1]
            if result.has_error():
                err = result.error()
                responses.append(_error(err.message(), err.code_name()))
                continue
            print("bls_call result: OK", file=sys.stderr, flush=True)
            responses.append(pb_utils.InferenceResponse(
                [t for t in result.output_tensors() if t.name() in ("OUTPUT0", "OUTPUT1")]))
        return responses
