"""Entry point: ``python -m vigil_stub --fd N``."""

import os
import signal
import socket
import sys

from .runtime import Stub
from .wire import Conn


def _parse_fd(argv):
    fd = None
    it = iter(argv)
    for arg in it:
        if arg == "--fd":
            fd = next(it, None)
        elif arg.startswith("--fd="):
            fd = arg[len("--fd="):]
        else:
            raise SystemExit("vigil_stub: unknown argument %r (usage: python -m vigil_stub --fd N)" % arg)
    if fd is None:
        raise SystemExit("vigil_stub: --fd N is required")
    try:
        return int(fd)
    except ValueError:
        raise SystemExit("vigil_stub: --fd wants a file descriptor number, got %r" % fd)


def main(argv=None):
    fd = _parse_fd(sys.argv[1:] if argv is None else argv)
    # -m puts the working directory first on sys.path; it must not shadow
    # the model's own imports (or numpy).
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    # The server decides when the stub stops (FINALIZE, EOF or a signal to
    # the process group); a Ctrl-C meant for the server must not kill the
    # model half-way through a batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise SystemExit("vigil_stub: fd %d is not a socket: %s" % (fd, e))
    os.set_inheritable(fd, False)
    code = Stub(Conn(sock)).serve()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        # Worker threads may be stuck in user code; nothing they hold needs
        # an orderly interpreter shutdown.
        os._exit(code)


if __name__ == "__main__":
    main()
