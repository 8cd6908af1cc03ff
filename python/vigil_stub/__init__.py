"""vigil_stub runs one Triton-style Python model instance for the vigil server.

The server starts it as ``<python> -u -m vigil_stub --fd 3`` with one end of a
stream socketpair as file descriptor 3 and the directory holding this package
and ``triton_python_backend_utils`` on PYTHONPATH. Everything the two sides
say to each other is described in internal/ipc/doc.go of the vigil source.

numpy is imported only once a model is loaded, so that a missing numpy is
reported over the socket as a clear initialize error instead of a crash.
"""

PROTOCOL_VERSION = 1
