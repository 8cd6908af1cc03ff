"""Returns each input as <name>_OUT (a new array, not a view, unless the
parameter "view" is true) and, in WHERE, what each input array looked at:
"mmap writable" for a mapped memory file. With "keep", it keeps the input
arrays (views) past execute; with "kept", it returns them as KEPT_<name>."""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _where(arr):
    base = arr
    while getattr(base, "base", None) is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return "%s %s" % (type(base).__name__, "writable" if arr.flags.writeable else "read-only")


class TritonPythonModel:
    def initialize(self, args):
        self.kept = {}

    def execute(self, requests):
        params = json.loads(requests[0].parameters() or "{}")
        if params.get("keep"):
            self.kept = {t.name(): t.as_numpy() for t in requests[0].inputs()}
        if "started" in params:
            # Hold the inputs while blocked, so that a test can kill the stub
            # with regions mapped.
            keep = [t.as_numpy() for r in requests for t in r.inputs()]
            with open(params["started"], "w") as f:
                f.write(str(len(keep)))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.01)
        view = params.get("view", False)
        responses = []
        for r in requests:
            outs, where = [], []
            for t in r.inputs():
                a = t.as_numpy()
                where.append(_where(a) if a.dtype != object else "object")
                outs.append(pb_utils.Tensor(t.name() + "_OUT", a if view else a.copy()))
            outs.append(pb_utils.Tensor("WHERE", np.array([w.encode() for w in where], dtype=object)))
            if params.get("kept"):
                outs.extend(pb_utils.Tensor("KEPT_" + k, v.copy()) for k, v in self.kept.items())
            responses.append(pb_utils.InferenceResponse(outs))
        return responses
