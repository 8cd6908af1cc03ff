"""Calls model "target" (or the model named by the request parameter
target) through BLS with each request's INPUT0, and returns the callee's
outputs, or its error as the response's error. The parameter control asks
instead for is_model_ready(control) and returns it as READY (BOOL); the
parameter load asks for load_model(load, config=<parameter config>,
files=<parameter files, JSON of path -> text, sent as bytes>) and returns
LOADED (BOOL)."""

import json

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            params = json.loads(r.parameters())
            if "control" in params:
                try:
                    ready = pb_utils.is_model_ready(params["control"])
                except pb_utils.TritonModelException as e:
                    out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(e.message())))
                    continue
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("READY", np.array([ready]))]))
                continue
            if "load" in params:
                files = {k: v.encode() for k, v in json.loads(params.get("files", "{}")).items()}
                try:
                    pb_utils.load_model(params["load"], config=params.get("config", ""), files=files)
                except pb_utils.TritonModelException as e:
                    out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(e.message())))
                    continue
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("LOADED", np.array([True]))]))
                continue
            call = pb_utils.InferenceRequest(
                request_id="child-" + r.request_id(),
                model_name=params.get("target", "target"),
                model_version=2,
                inputs=[pb_utils.get_input_tensor_by_name(r, "INPUT0")],
                requested_output_names=["OUT", "OUT"],
                correlation_id=7,
                flags=pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
                timeout=1500,
                parameters={"k": "v", "n": 3},
            )
            resp = call.exec()
            if resp.has_error():
                out.append(pb_utils.InferenceResponse(error=resp.error()))
            else:
                out.append(pb_utils.InferenceResponse(resp.output_tensors()))
        return out
