"""execute never returns; it writes EXECUTING in the model directory first."""

import os
import time


class TritonPythonModel:
    def initialize(self, args):
        self.marker = os.path.join(args["model_repository"], "EXECUTING")

    def execute(self, requests):
        open(self.marker, "w").close()
        while True:
            time.sleep(1)
