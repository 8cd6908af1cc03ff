"""Forwards INPUT0/INPUT1 to the model named by MODEL_NAME and checks where
the callee's large outputs landed: each must be a read-only view inside a
mapping of a memory file of this process (/proc/self/maps) named by the
request parameter file ("vigil-bls-out", the callee stub's file for its
outputs, unless given). Otherwise, or when the call fails, ERROR says why;
else the outputs are returned. With the parameter die_ms, the process kills
itself with SIGKILL that many milliseconds into the call. Other parameters
are the call's."""

import json
import os
import re
import signal
import threading
import time

import numpy as np

import triton_python_backend_utils as pb_utils


def _memfd_ranges(name):
    pattern = re.compile(r"/memfd:%s( \(deleted\))?$" % re.escape(name))
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if pattern.search(line.rstrip("\n")):
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def _die_in(ms):
    time.sleep(ms / 1000)
    os.kill(os.getpid(), signal.SIGKILL)


def _error(message):
    return pb_utils.InferenceResponse([pb_utils.Tensor("ERROR", np.array([message], dtype=np.object_))])


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            target = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0].decode()
            params = json.loads(request.parameters())
            want = params.pop("file", "vigil-bls-out")
            die_ms = params.pop("die_ms", None)
            call = pb_utils.InferenceRequest(
                model_name=target,
                inputs=[pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                        pb_utils.get_input_tensor_by_name(request, "INPUT1")],
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                parameters=params)
            if die_ms is not None:
                threading.Thread(target=_die_in, args=(die_ms,), daemon=True).start()
            result = call.exec()
            if result.has_error():
                responses.append(_error(result.error().message()))
                continue
            ranges = _memfd_ranges(want)
            outside = []
            for name in ("OUTPUT0", "OUTPUT1"):
                x = pb_utils.get_output_tensor_by_name(result, name).as_numpy()
                at = x.__array_interface__["data"][0]
                if x.flags.writeable or not any(lo <= at and at + x.nbytes <= hi for lo, hi in ranges):
                    outside.append(name)
            if outside:
                responses.append(_error("%s not read-only views of a memfd:%s mapping" % (", ".join(outside), want)))
                continue
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, pb_utils.get_output_tensor_by_name(result, name).as_numpy())
                 for name in ("OUTPUT0", "OUTPUT1")]))
        return responses
