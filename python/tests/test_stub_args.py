"""The stub's command line: fds, nice, and the names that say in ps which
model and instance a stub serves."""

import subprocess
import sys

import pytest

from vigil_stub.__main__ import _parse_args


def test_names_are_optional():
    assert _parse_args(["--fd", "3", "--control-fd", "4"]) == (3, 4, 0, ("", "", ""))


def test_names_parse():
    got = _parse_args(["--fd=3", "--control-fd", "4", "--nice", "5",
                       "--model", "add_sub", "--version", "1", "--instance=add_sub_0"])
    assert got == (3, 4, 5, ("add_sub", "1", "add_sub_0"))


@pytest.mark.parametrize("argv, says", [
    (["--fd", "3", "--control-fd", "4", "--model"], "--model needs a value"),
    (["--fd", "3", "--control-fd", "4", "--bogus", "1"], "unknown argument '--bogus'"),
    (["--control-fd", "4"], "--fd is required"),
])
def test_bad_arguments_name_the_culprit(argv, says):
    with pytest.raises(SystemExit) as e:
        _parse_args(argv)
    assert says in str(e.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="comm is Linux's")
def test_process_name():
    code = ("from vigil_stub.__main__ import _set_process_name as s; s('add_sub_0'); "
            "print(open('/proc/self/comm').read().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(p for p in sys.path if p)}).stdout.strip()
    assert out == "vigil:add_sub_0"
