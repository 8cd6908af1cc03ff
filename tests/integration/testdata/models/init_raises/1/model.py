class TritonPythonModel:
    def initialize(self, args):
        raise ValueError("cannot open weights file /nonexistent/weights.bin")

    def execute(self, requests):
        return []
