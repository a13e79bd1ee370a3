#!/usr/bin/env bash
# tests/python.sh 3.13: print the path of a working Python of that version, building 3.13 once if none is found
# (asked for another version that is not found, it gives 3.13).
#
# ansible-core 2.20 and later need Python >= 3.12 on the controller; Debian 12 ships 3.11. Looked for, in order:
# pythonX.Y on PATH (one that really runs: a pyenv shim may not), pyenv's versions directory, and a 3.13 built
# earlier by this script. Otherwise 3.13 is built from Debian 13's python3.13 source package (Debian's mirrors are
# reachable here, python.org is not) into a cache outside the work tree, so a fresh clone reuses it: 2.5 minutes on
# 2 cores, once per machine. apt gets its own source list and state directory through -o options: the machine's apt
# configuration is neither read nor changed. Exit 1 (with the reason on stderr) when no interpreter can be had.
set -euo pipefail
version=${1:?usage: tests/python.sh 3.12|3.13}
cache=${MAILSEC_PYTHON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailsec-sendgrid}
prefix="$cache/python$version"

works() { "$1" -c 'import ssl, sqlite3, ctypes, venv, ensurepip' >/dev/null 2>&1; }

candidates=("$(command -v "python$version" || true)")
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
for dir in "$pyenv_root"/versions/"$version".*; do candidates+=("$dir/bin/python$version"); done
candidates+=("$prefix/bin/python$version")
for candidate in "${candidates[@]}"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && works "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done

if [ "$version" != 3.13 ]; then
  # Only 3.13 can be built here (from Debian 13's sources). Every ansible-core that needs 3.12 runs on 3.13 too; the
  # matrix prints the Python each release ran on, so the substitute shows in make test's output.
  echo "no working Python $version on this machine: using Python 3.13 instead" >&2
  exec "$0" 3.13
fi

# make -j may ask for 3.13 from two matrix releases at once: one builds, the other waits and takes its result.
mkdir -p "$cache"
exec 9>"$cache/build-python$version.lock"
flock 9
if works "$prefix/bin/python$version"; then
  echo "$prefix/bin/python$version"
  exit 0
fi
work="$cache/build-python$version"
log="$cache/build-python$version.log"
rm -rf "$work"
mkdir -p "$work/lists/partial"
echo 'deb-src http://deb.debian.org/debian trixie main' > "$work/sources.list"
echo "building Python $version into $prefix (once per machine, a few minutes; log: $log)" >&2
# The steps run in a bash of their own with -e: inside "( ... ) || handler" bash would ignore -e and go on
# after a failed step.
# shellcheck disable=SC2016  # expanded by that bash, from the variables exported to it
if ! work=$work prefix=$prefix version=$version bash -euo pipefail -c '
  apt_options=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$work/lists")
  apt-get "${apt_options[@]}" update
  (cd "$work" && apt-get "${apt_options[@]}" source --download-only "python$version")
  # The upstream tarball, not its signature (python3.13_3.13.5.orig.tar.xz, not ...orig.tar.xz.asc).
  tarball=$(find "$work" -maxdepth 1 -name "python${version}_*.orig.tar.*" ! -name "*.asc" | sort | head -n 1)
  [ -n "$tarball" ] || { echo "no python$version source tarball was downloaded" >&2; exit 1; }
  mkdir "$work/src"
  tar -xf "$tarball" -C "$work/src" --strip-components=1
  cd "$work/src"
  ./configure --prefix="$prefix" --with-ensurepip=install
  make -j"$(nproc)"
  make install
' >"$log" 2>&1; then
  echo "building Python $version failed; the end of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
rm -rf "$work"
works "$prefix/bin/python$version"
echo "$prefix/bin/python$version"
