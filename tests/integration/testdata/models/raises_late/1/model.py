"""Serves, but its health hook and its finalize raise."""

import triton_python_backend_utils as pb_utils


def _check_weights():
    raise OSError("weights checksum mismatch")


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]

    def is_healthy(self):
        _check_weights()

    def finalize(self):
        raise RuntimeError("cannot flush the cache")
