"""Echoes every input as <name>_OUT and reports what it was given."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            outs = []
            codes = []
            for t in request.inputs():
                arr = t.as_numpy()
                assert list(arr.shape) == t.shape(), (arr.shape, t.shape())
                outs.append(pb_utils.Tensor(t.name() + "_OUT", arr))
                codes.append(t.triton_dtype())
            outs.append(pb_utils.Tensor("ARGS", np.array([json.dumps(self.args).encode()], dtype=np.object_)))
            outs.append(pb_utils.Tensor("PARAMS", np.array([request.parameters()], dtype=np.object_)))
            outs.append(pb_utils.Tensor("REQUEST_ID", np.array([request.request_id()], dtype=np.object_)))
            outs.append(pb_utils.Tensor("CODES", np.array(codes, dtype=np.int32)))
            outs.append(pb_utils.Tensor("UNICODE", np.array(["héllo", "wörld"])))
            outs.append(pb_utils.Tensor("BIG_ENDIAN", np.arange(3, dtype=">i4")))
            outs.append(pb_utils.Tensor("STRIDED", np.arange(6, dtype=np.int64).reshape(2, 3).T))
            cfg = pb_utils.get_output_config_by_name(self.config, "OUT")
            outs.append(pb_utils.Tensor("CONFIG_DTYPE", np.array([cfg["data_type"] if cfg else ""], dtype=np.object_)))
            responses.append(pb_utils.InferenceResponse(output_tensors=outs, parameters={"echoed": True}))
        return responses
