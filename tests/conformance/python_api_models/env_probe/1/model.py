"""Answers with JSON: the interpreter's prefix and executable, and the marker
module's WHERE (or the ImportError)."""

import json
import sys

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        try:
            import vigil_env_marker  # noqa: PLC0415 - only some environments have it

            marker = vigil_env_marker.WHERE
        except ImportError as e:
            marker = "ImportError: %s" % e
        out = json.dumps({"prefix": sys.prefix, "executable": sys.executable, "marker": marker}).encode()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([out], dtype=np.object_))])
                for _ in requests]
