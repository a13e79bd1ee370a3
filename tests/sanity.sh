#!/usr/bin/env bash
# ansible-test sanity, offline-capable, on the working tree.
# ansible-test wants the collection at .../ansible_collections/mailsec/sendgrid in a git checkout
# (it reads only tracked files), and downloads get-pip from a host this network cannot reach:
# we give it a stand-in that bootstraps pip with ensurepip, then installs what it asked for.
set -euo pipefail
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

work="$root/.tmp/sanity/ansible_collections/mailsec/sendgrid"
mkdir -p "$work"
# Keep tests/output (ansible-test's venvs, ~2 min to build) between runs; replace everything else.
find "$work" -mindepth 1 -maxdepth 1 ! -name tests ! -name .git -exec rm -rf {} +
find "$work/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} + 2>/dev/null || true
# The files git tracks plus new ones it does not ignore: what the next commit would hold.
(cd "$root" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$work")
cd "$work"
[ -d .git ] || git init -q
git add -A
"$bin/ansible-test" sanity --venv --python 3.11 --color no "$@"
