#!/usr/bin/env bash
# make matrix: the unit and integration tests on one ansible-core release, in its own venv.
# Usage: tests/matrix.sh 2.16.19          (this machine's python3)
#        tests/matrix.sh 2.21.5@3.13      (a Python 3.13 from tests/python.sh: found, or built once and cached)
# Each venv is built once, then reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=${1%@*}
python=python3
if [ "$1" != "$version" ]; then
  python=$("$root/tests/python.sh" "${1#*@}")
fi
venv="$root/.tmp/matrix/$version-$("$python" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"
if [ ! -f "$venv/.installed" ] || [ "$root/tests/requirements-matrix.txt" -nt "$venv/.installed" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ansible-core==$version" -r "$root/tests/requirements-matrix.txt"
  touch "$venv/.installed"
fi
cd "$root"
echo "== ansible-core $("$venv/bin/python" -c 'import ansible; print(ansible.__version__)') on Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/integration
