"""Entry point: ``python -m vigil_stub --fd N --control-fd M [--nice K]
[--model NAME --version V --instance NAME]``, or
``python -m vigil_stub --auto-complete`` (see autocomplete.py).

The names are only for people: ps shows them on the command line, and the
stub sets its process name (what top and ps -o comm show) to
"vigil:<instance>", cut to the kernel's 15 bytes."""

import os
import signal
import socket
import sys

from .runtime import Stub
from .wire import Conn


_USAGE = ("usage: python -m vigil_stub --fd N --control-fd M [--nice K] "
          "[--model NAME --version V --instance NAME]")
_NAMES = ("--model", "--version", "--instance")


def _parse_args(argv):
    """Return (data fd, control fd, nice increment) from the command line,
    and the names (model, version, instance; "" when not given)."""
    args = {"--fd": None, "--control-fd": None, "--nice": "0"}
    names = dict.fromkeys(_NAMES, "")
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in names:
            value = value if eq else next(it, None)
            if value is None:
                raise SystemExit("vigil_stub: %s needs a value (%s)" % (name, _USAGE))
            names[name] = value
            continue
        if name not in args:
            raise SystemExit("vigil_stub: unknown argument %r (%s)" % (arg, _USAGE))
        args[name] = value if eq else next(it, None)
    out = []
    for name, value in args.items():
        if value is None:
            raise SystemExit("vigil_stub: %s is required (%s)" % (name, _USAGE))
        try:
            out.append(int(value))
        except ValueError:
            raise SystemExit("vigil_stub: %s wants an integer, got %r" % (name, value))
    return out[0], out[1], out[2], tuple(names[n] for n in _NAMES)


def _set_process_name(instance):
    """Set the kernel's name of the process (comm) to vigil:<instance>."""
    if not instance or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes  # noqa: PLC0415 - only for this

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_name = 15
        libc.prctl(pr_set_name, ("vigil:" + instance).encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass  # a name is a convenience; the command line has it anyway


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--auto-complete"]:
        if sys.path and sys.path[0] in ("", os.getcwd()):
            del sys.path[0]
        from .autocomplete import main as auto_complete  # noqa: PLC0415

        sys.stdout.flush()
        os._exit(auto_complete())
    fd, control_fd, nice, (_model, _version, instance) = _parse_args(argv)
    _set_process_name(instance)
    if nice:
        # Before any thread starts, so that every thread of the stub, and
        # every process the model starts, runs at the lower priority.
        os.nice(nice)
    # -m puts the working directory first on sys.path; it must not shadow
    # the model's own imports (or numpy).
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    # The server decides when the stub stops (FINALIZE, EOF or a signal to
    # the process group); a Ctrl-C meant for the server must not kill the
    # model half-way through a batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    socks = []
    for n in (fd, control_fd):
        try:
            socks.append(socket.socket(fileno=n))
        except OSError as e:
            raise SystemExit("vigil_stub: fd %d is not a socket: %s" % (n, e))
        os.set_inheritable(n, False)
    # Large tensors come and go as memory files passed on the data socket.
    code = Stub(Conn(socks[0], pass_fds=True), Conn(socks[1])).serve()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        # Worker threads may be stuck in user code; nothing they hold needs
        # an orderly interpreter shutdown.
        os._exit(code)


if __name__ == "__main__":
    main()
