#!/usr/bin/env bash
# make matrix: the unit and integration tests on one ansible-core release, in its own venv.
# Usage: tests/matrix.sh 2.16.14   (each venv is built once, then reused)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$1
venv="$root/.tmp/matrix/$version"
if [ ! -f "$venv/.installed" ] || [ "$root/tests/requirements-matrix.txt" -nt "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ansible-core==$version" -r "$root/tests/requirements-matrix.txt"
  touch "$venv/.installed"
fi
cd "$root"
echo "== ansible-core $("$venv/bin/python" -c 'import ansible; print(ansible.__version__)')"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/integration
