#!/usr/bin/env bash
# Release hygiene: the tarball builds, galaxy-importer accepts it with no warning or error,
# and the changelog builds a release (in a scratch copy, so the fragments stay).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
importer="$root/.tmp/venv-importer"
if [ ! -f "$importer/.installed" ] || [ tests/requirements-importer.txt -nt "$importer/.installed" ]; then
  python3 -m venv "$importer"
  "$importer/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements-importer.txt
  touch "$importer/.installed"
fi
rm -rf .tmp/dist && .venv/bin/ansible-galaxy collection build --output-path .tmp/dist >/dev/null
tarball=$(ls .tmp/dist/mailsec-sendgrid-*.tar.gz)
log=.tmp/importer.log
(cd .tmp/dist && PATH="$importer/bin:$PATH" GALAXY_IMPORTER_CONFIG="$root/tests/galaxy-importer.cfg" \
  "$importer/bin/python" -m galaxy_importer.main "$root/$tarball") > "$log" 2>&1 || { cat "$log"; exit 1; }
if grep -qiE "warning|error" "$log"; then cat "$log"; echo "galaxy-importer reported warnings or errors"; exit 1; fi
echo "galaxy-importer: $(tail -1 "$log")"
# galaxy.yml says GPL-3.0-or-later only: no third-party (MIT) file may travel in the tarball.
if tar -tzf "$tarball" | grep -q '^tests/contract/'; then echo "the tarball carries tests/contract (MIT-licensed specs)"; exit 1; fi

# The built tarball installs, and ansible-doc reads its modules from there.
inst="$root/.tmp/installed"
rm -rf "$inst" && .venv/bin/ansible-galaxy collection install --force -p "$inst" "$tarball" >/dev/null 2>&1
for plugin in enforced_tls enforced_tls_info enforced_tls_fleet tls_check recipient_tls_info tls_blocks_info; do
  ANSIBLE_COLLECTIONS_PATH="$inst" .venv/bin/ansible-doc "mailsec.sendgrid.$plugin" | grep -q "mailsec.sendgrid.$plugin"
done
ANSIBLE_COLLECTIONS_PATH="$inst" .venv/bin/ansible-doc -t inventory mailsec.sendgrid.subusers | grep -q "mailsec.sendgrid.subusers"
ANSIBLE_COLLECTIONS_PATH="$inst" .venv/bin/ansible-doc -t role mailsec.sendgrid.enforced_tls_policy | grep -q "enforced_tls_policy_version"
echo "installed tarball: ansible-doc shows every plugin and the role"

.venv/bin/antsibull-changelog lint
scratch="$root/.tmp/changelog-release"
rm -rf "$scratch" && mkdir -p "$scratch"
git ls-files -z --cached --others --exclude-standard | grep -zv '^tests/' | xargs -0 cp --parents -t "$scratch"
(cd "$scratch" && PATH="$root/.venv/bin:$PATH" antsibull-changelog release --version "$(sed -n 's/^version: //p' galaxy.yml)" >/dev/null 2>&1 \
  && grep -q "Release Notes" CHANGELOG.rst)
echo "changelog: a release builds"
