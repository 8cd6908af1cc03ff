class TritonPythonModel:
    def initialize(self, args):
        raise ValueError("bad config value for " + args["model_name"])

    def execute(self, requests):
        return []
