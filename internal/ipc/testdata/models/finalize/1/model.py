import json


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.marker = cfg["parameters"]["finalize_marker"]["string_value"]

    def execute(self, requests):
        return []

    def finalize(self):
        with open(self.marker, "w") as f:
            f.write("finalized")
