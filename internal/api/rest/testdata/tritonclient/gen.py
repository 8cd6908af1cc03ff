#!/usr/bin/env python3
"""Regenerates the request bodies in this directory with tritonclient's own
request builder (tritonclient.http._utils._get_inference_request), so the Go
tests decode exactly what tritonclient sends. Run: python3 gen.py

manifest.json maps each case to the Inference-Header-Content-Length value
tritonclient would send (null when it sends none).
"""
import json

import numpy as np
import tritonclient.http as httpclient
from tritonclient.http import _utils


def build(name, inputs, outputs=None, request_id="", custom_parameters=None, **kw):
    body, json_size = _utils._get_inference_request(
        inputs=inputs,
        request_id=request_id,
        outputs=outputs,
        sequence_id=kw.get("sequence_id", 0),
        sequence_start=False,
        sequence_end=False,
        priority=kw.get("priority", 0),
        timeout=kw.get("timeout"),
        custom_parameters=custom_parameters,
    )
    with open(name + ".body", "wb") as f:
        f.write(body if isinstance(body, bytes) else body.encode())
    return json_size


manifest = {}

# add_sub as the Triton quick start calls it: binary inputs, no outputs
# requested, so tritonclient asks for every output in binary.
in0 = httpclient.InferInput("INPUT0", [4], "FP32")
in0.set_data_from_numpy(np.array([1, 2, 3, 4], dtype=np.float32))
in1 = httpclient.InferInput("INPUT1", [4], "FP32")
in1.set_data_from_numpy(np.array([0.5, -1, 10, 0], dtype=np.float32))
manifest["add_sub_binary"] = build("add_sub_binary", [in0, in1], request_id="req-1")

# Mixed: a binary BYTES input (with a non-UTF-8 element), a JSON INT8
# input, a binary FP16 input; one output binary, one JSON; custom and
# timeout parameters.
b = httpclient.InferInput("TEXT", [1, 2], "BYTES")
b.set_data_from_numpy(np.array([[b"hello", b"\xff\x00z"]], dtype=np.object_))
i8 = httpclient.InferInput("SMALL", [2, 2], "INT8")
i8.set_data_from_numpy(np.array([[-128, 0], [1, 127]], dtype=np.int8), binary_data=False)
h = httpclient.InferInput("HALF", [3], "FP16")
h.set_data_from_numpy(np.array([1.5, -2, 65504], dtype=np.float16))
outs = [
    httpclient.InferRequestedOutput("OUT_BIN", binary_data=True),
    httpclient.InferRequestedOutput("OUT_JSON", binary_data=False),
]
manifest["mixed"] = build(
    "mixed", [b, i8, h], outputs=outs, request_id="42",
    custom_parameters={"note": "hi", "count": 3}, timeout=1000,
)

# All JSON: tritonclient sends no Inference-Header-Content-Length.
j = httpclient.InferInput("X", [2, 3], "UINT16")
j.set_data_from_numpy(np.arange(6, dtype=np.uint16).reshape(2, 3), binary_data=False)
s = httpclient.InferInput("S", [1], "BYTES")
s.set_data_from_numpy(np.array(["héllo"], dtype=np.object_), binary_data=False)
manifest["all_json"] = build(
    "all_json", [j, s], outputs=[httpclient.InferRequestedOutput("Y", binary_data=False)]
)

with open("manifest.json", "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
