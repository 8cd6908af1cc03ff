"""Loading the user's model.py: what the serving stub and auto-complete share."""

import importlib.util
import os
import sys


class NoModelClass(Exception):
    """model.py imported but defines no TritonPythonModel."""


def numpy_missing(exc):
    """The message for an interpreter that cannot import numpy: how to install it."""
    return "%s (python %s; install it with: %s -m pip install numpy)" % (exc, sys.executable, sys.executable)


def model_class(model_file):
    """Import model_file as the module "model", its version directory first
    on sys.path (so that it imports its neighbours, as in Triton), and
    return its TritonPythonModel class. What the import raises propagates;
    a module without the class raises NoModelClass."""
    version_dir = os.path.dirname(model_file)
    if version_dir not in sys.path:
        sys.path.insert(0, version_dir)
    spec = importlib.util.spec_from_file_location("model", model_file)
    if spec is None:
        raise ImportError("cannot load %s as a Python module" % model_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    cls = getattr(module, "TritonPythonModel", None)
    if cls is None:
        raise NoModelClass("%s defines no class TritonPythonModel" % model_file)
    return cls
