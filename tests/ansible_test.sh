#!/usr/bin/env bash
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ansible-test on the working tree, offline-capable, in a venv of its own:
#   tests/ansible_test.sh sanity|units|integration [more ansible-test options]
# ansible-test wants the collection at .../ansible_collections/mailsec/sendgrid in a git checkout
# (it reads only tracked files), and downloads get-pip from a host this network cannot reach:
# we give it a stand-in that bootstraps pip with ensurepip, then installs what it asked for.
# Each command has its own copy, so that they may run at the same time.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 sanity|units|integration [ansible-test options]" >&2; exit 2; }
command=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.venv/bin"
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for version in 24_2 23_1 21_3; do
  cat > "$cache/get_pip_$version.py" <<'PY'
"""Offline stand-in for get-pip.py: ensurepip, then pip install the given requirements."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
if args:
    subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
PY
done

work="$root/.tmp/ansible-test/$command/ansible_collections/mailsec/sendgrid"
mkdir -p "$work"
# Keep tests/output (ansible-test's results) between runs; replace everything else.
find "$work" -mindepth 1 -maxdepth 1 ! -name tests ! -name .git -exec rm -rf {} +
find "$work/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} + 2>/dev/null || true
# The files git tracks plus new ones it does not ignore: what the next commit would hold.
# (Files deleted but not yet staged are listed too: skipped.)
(cd "$root" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done | xargs -0 cp --parents -t "$work")
cd "$work"
[ -d .git ] || git init -q
git add -A
mkdir -p tests/output
log=tests/output/ansible-test.log
"$bin/ansible-test" "$command" --venv --python 3.11 --color no "$@" 2>&1 | tee "$log"
# The counts, for the end of a long make test output.
case $command in
  units)
    # One pytest session per test context (modules, module_utils, controller), each ending in its counts.
    paste -d ' ' <(sed -nE 's/^Unit test (.+) with Python .*/\1:/p' "$log") \
      <(sed -nE 's/^=+ (.+) in [0-9.]+s =+$/\1/p' "$log") | sed 's/^/== ansible-test units, /' ;;
  integration)
    targets=$(sed -nE 's/^Running (.+) integration test (role|script)$/\1/p' "$log")
    echo "== ansible-test integration: $(echo "$targets" | grep -c .) targets passed: $(echo "$targets" | paste -sd ' ')" ;;
esac
