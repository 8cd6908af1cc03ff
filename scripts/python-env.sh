#!/bin/sh
# python-env.sh PYTHON REQUIREMENTS MODULE...
#
# Prints the absolute path of a Python interpreter that imports every MODULE,
# installing REQUIREMENTS first when one is missing. Progress goes to stderr;
# only the path goes to stdout.
#
# Order:
#   1. PYTHON itself, if it already imports every module;
#   2. the project's virtual environment .venv, if it does;
#   3. pip install into PYTHON, unless PYTHON is managed by the system
#      (PEP 668: Debian's python3 refuses pip with
#      "externally-managed-environment") or has no pip;
#   4. otherwise a project-local virtual environment .venv created from
#      PYTHON, and pip install into it.
set -eu

py=$1
req=$2
shift 2
venv=.venv

say() { printf 'python-env: %s\n' "$*" >&2; }

imports() { # imports INTERPRETER MODULE...: does it import every module?
	i=$1
	shift
	"$i" -c "import sys, importlib
for m in sys.argv[1:]:
    importlib.import_module(m)" "$@" >/dev/null 2>&1
}

abspath() { "$1" -c 'import sys; print(sys.executable)'; }

if ! command -v "$py" >/dev/null 2>&1; then
	say "error: no Python interpreter '$py' (install python3, or set PYTHON=/path/to/python3)"
	exit 1
fi
mods="$*"
if imports "$py" "$@"; then
	abspath "$py"
	exit 0
fi
if [ -x "$venv/bin/python" ] && imports "$venv/bin/python" "$@"; then
	abspath "$venv/bin/python"
	exit 0
fi

# Is PYTHON externally managed (PEP 668), or without pip?
managed=$("$py" -c 'import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
print("yes" if not in_venv and os.path.exists(marker) else "no")')
if [ "$managed" = no ] && "$py" -m pip --version >/dev/null 2>&1; then
	say "installing $req into $(abspath "$py") (missing: some of $mods)"
	"$py" -m pip install --disable-pip-version-check --progress-bar on -r "$req" >&2
	if imports "$py" "$@"; then
		abspath "$py"
		exit 0
	fi
	say "error: after pip install, $(abspath "$py") still cannot import all of: $mods"
	exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
	if [ "$managed" = yes ]; then
		say "$(abspath "$py") is managed by the system and refuses pip (PEP 668, externally-managed-environment):"
	else
		say "$(abspath "$py") has no pip:"
	fi
	say "creating a project-local virtual environment in $venv ($py -m venv $venv); vigil's stubs will run on $venv/bin/python"
	if ! "$py" -m venv "$venv" >&2; then
		say "error: '$py -m venv' failed; on Debian or Ubuntu: apt-get install python3-venv"
		rm -rf "$venv"
		exit 1
	fi
fi
say "installing $req into $venv (missing: some of $mods)"
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar on -r "$req" >&2
if ! imports "$venv/bin/python" "$@"; then
	say "error: after pip install, $venv/bin/python still cannot import all of: $mods"
	exit 1
fi
abspath "$venv/bin/python"
