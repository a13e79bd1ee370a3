#!/usr/bin/env bash
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# make matrix: tests on one ansible-core release, in its own venv (built once, then reused).
# Usage: tests/matrix.sh RELEASE[@PYTHON] [--sanity] [PYTEST PATHS...]
#   tests/matrix.sh 2.16.19 --sanity tests/unit     pytest tests/unit, then ansible-test sanity, on this machine's python3
#   tests/matrix.sh 2.21.5@3.13                     tests/unit and tests/integration on a Python 3.13 from tests/python.sh
# The Makefile chooses the paths for each release (its PLAYBOOK_SUITES and PYTHON_SUITES).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 RELEASE[@PYTHON] [--sanity] [PYTEST PATHS...]" >&2; exit 2; }
version=${1%@*}
python=python3
if [ "$1" != "$version" ]; then
  python=$("$root/tests/python.sh" "${1#*@}")
fi
shift
sanity=false
if [ "${1:-}" = --sanity ]; then
  sanity=true
  shift
fi
[ $# -ge 1 ] || set -- tests/unit tests/integration
venv="$root/.tmp/matrix/$version-$("$python" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"
if [ ! -f "$venv/.installed" ] || [ "$root/tests/requirements-matrix.txt" -nt "$venv/.installed" ] \
    || [ "$root/tests/constraints.txt" -nt "$venv/.installed" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ansible-core==$version" \
    -r "$root/tests/requirements-matrix.txt" -c "$root/tests/constraints.txt"
  touch "$venv/.installed"
fi
cd "$root"
echo "== ansible-core $("$venv/bin/python" -c 'import ansible; print(ansible.__version__)') on Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'): $*"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
if $sanity; then
  ANSIBLE_TEST_VENV=$venv tests/ansible_test.sh sanity
fi
