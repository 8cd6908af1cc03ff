"""Auto-complete: ``python -m vigil_stub --auto-complete``.

A short-lived process, as in Triton: it reads {"model_file", "model_dir",
"config"} as JSON from stdin, imports model.py and, when TritonPythonModel
has auto_complete_config, calls it on the class with a
pb_utils.ModelConfig of the configuration. It writes one JSON object to
stdout: {"config": {...}, "called": bool} or {"error": {"op", "type",
"message", "traceback"}}. Whatever the model prints goes to stderr.
"""

import json
import os
import sys
import traceback

from .modelfile import NoModelClass, model_class, numpy_missing


def _failure(op, message, exc=None):
    err = {"op": op, "message": message}
    if exc is not None:
        err["type"] = type(exc).__name__
        err["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"error": err}


def _complete(req):
    try:
        import numpy  # noqa: F401, PLC0415
    except BaseException as e:  # noqa: BLE001
        return _failure("import numpy", numpy_missing(e), e)
    try:
        import triton_python_backend_utils as pb  # noqa: PLC0415
    except BaseException as e:  # noqa: BLE001
        return _failure("import triton_python_backend_utils", str(e), e)
    pb._stub["model_dir"] = req.get("model_dir", "")
    try:
        cls = model_class(req["model_file"])
    except NoModelClass as e:
        return _failure("import model.py", str(e))
    except BaseException as e:  # noqa: BLE001
        return _failure("import model.py", str(e), e)
    config = req["config"]
    fn = getattr(cls, "auto_complete_config", None)
    if fn is None:
        return {"config": config, "called": False}
    name = config.get("name", "")
    try:
        result = fn(pb.ModelConfig(config, name))
    except BaseException as e:  # noqa: BLE001
        return _failure("auto_complete_config", str(e), e)
    if not isinstance(result, pb.ModelConfig):
        return _failure("auto_complete_config", "auto_complete_config function in model '%s' must return a valid "
                        "pb.ModelConfig object." % name)
    return {"config": result._model_config, "called": True}


def main():
    # The answer goes to the real stdout; the model's prints go to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        reply = _complete(json.load(sys.stdin))
    except BaseException as e:  # noqa: BLE001
        reply = _failure("stub", "vigil_stub failed: %s: %s" % (type(e).__name__, e), e)
    try:
        out.write(json.dumps(reply))
    except (TypeError, ValueError) as e:
        out.write(json.dumps(_failure("auto_complete_config", "the configuration it returned is not JSON: %s" % e, e)))
    out.flush()
    return 0
