"""is_healthy answers as the last execute's "health" parameter says."""

import json
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.health = "true"
        self.calls = 0

    def execute(self, requests):
        params = json.loads(requests[0].parameters())
        self.health = params.get("health", self.health)
        self.release = params.get("release")
        self.started = params.get("started")
        return [pb_utils.InferenceResponse([]) for _ in requests]

    def is_healthy(self):
        self.calls += 1
        if self.health == "false":
            return False
        if self.health == "raise":
            raise ValueError("database connection lost")
        if self.health == "block":
            with open(self.started, "a") as f:
                f.write("call %d\n" % self.calls)
            deadline = time.monotonic() + 120
            while not os.path.exists(self.release) and time.monotonic() < deadline:
                time.sleep(0.005)
            with open(self.started, "a") as f:
                f.write("return %d\n" % self.calls)
            return "calls=%d" % self.calls
        return True

    def is_ready(self):
        raise AssertionError("is_healthy must win over is_ready")
