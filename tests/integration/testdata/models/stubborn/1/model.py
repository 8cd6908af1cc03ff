"""Its finalize() never returns, and it ignores SIGTERM: only SIGKILL ends it."""

import ctypes
import signal
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # signal.signal works only on the main thread; the C call sets the
        # process-wide disposition from any thread.
        ctypes.CDLL(None).signal(int(signal.SIGTERM), 1)  # SIG_IGN

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]

    def finalize(self):
        while True:
            time.sleep(1)
