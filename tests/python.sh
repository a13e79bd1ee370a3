#!/usr/bin/env bash
# tests/python.sh 3.13: print the path of a working Python of that version, building 3.13 once if none is found.
#
# ansible-core 2.20 and later need Python >= 3.12 on the controller; Debian 12 ships 3.11. Looked for, in order:
# pythonX.Y on PATH (one that really runs: a pyenv shim may not), pyenv's versions directory, and a 3.13 built
# earlier by this script. Otherwise 3.13 is built from Debian 13's python3.13 source package (Debian's mirrors are
# reachable here, python.org is not) into a cache outside the work tree, so a fresh clone reuses it: ~7 minutes on
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
  echo "no working Python $version on this machine (only 3.13 can be built here, from Debian 13's sources)" >&2
  exit 1
fi

work="$cache/build-python$version"
log="$cache/build-python$version.log"
rm -rf "$work"
mkdir -p "$work/lists/partial"
echo 'deb-src http://deb.debian.org/debian trixie main' > "$work/sources.list"
apt_options=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$work/lists")
echo "building Python $version into $prefix (once per machine, ~7 minutes; log: $log)" >&2
(
  apt-get "${apt_options[@]}" update
  (cd "$work" && apt-get "${apt_options[@]}" source --download-only "python$version")
  mkdir "$work/src"
  tar -xf "$(find "$work" -maxdepth 1 -name "python${version}_*.orig.tar.*" | sort | head -n 1)" -C "$work/src" --strip-components=1
  cd "$work/src"
  ./configure --prefix="$prefix" --with-ensurepip=install
  make -j"$(nproc)"
  make install
) >"$log" 2>&1 || {
  echo "building Python $version failed; the end of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}
rm -rf "$work"
works "$prefix/bin/python$version"
echo "$prefix/bin/python$version"
