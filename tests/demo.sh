#!/usr/bin/env bash
# make demo: the bundled SendGrid simulator on 127.0.0.1 with ~50 subusers of mixed state, then the
# collection as a user runs it: audit, enforce in check mode, enforce, enforce again, audit again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/.tmp/demo"
rm -rf "$work"
mkdir -p "$work/inventory/group_vars" "$work/inventory/host_vars" "$work/reports"
key="demo-key-$(date +%s)"

"$root/.venv/bin/python" "$root/tests/simulator/sendgrid_sim.py" --subusers 50 --drift-mixed --eu-every 10 \
  --disabled-every 17 --api-key "$key" --url-file "$work/url" >"$work/simulator.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
url=$(cat "$work/url")

export SENDGRID_API_KEY="$key" SENDGRID_API_URL="$url"
cat > "$work/inventory/demo.sendgrid.yml" <<YAML
# Every enabled subuser of the parent account becomes a host (the key comes from SENDGRID_API_KEY).
plugin: mailsec.sendgrid.subusers
api_url: $url
keyed_groups:
  - key: sendgrid_region
    prefix: region
YAML
cat > "$work/inventory/group_vars/sendgrid_subusers.yml" <<YAML
# The policy for every subuser...
enforced_tls_policy_require_tls: true
enforced_tls_policy_require_valid_cert: true
enforced_tls_policy_version: "1.2"
YAML
cat > "$work/inventory/host_vars/sub0007.yml" <<YAML
# ...and one exception: a partner that still needs TLS 1.1.
enforced_tls_policy_version: "1.1"
YAML

log() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
counts() {
  "$root/.venv/bin/python" - "$url" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
with urllib.request.urlopen(url + "/_sim/log?summary=1") as answer:
    print("   simulator log:", json.load(answer)["by_method"])
urllib.request.urlopen(urllib.request.Request(url + "/_sim/reset-log", method="POST")).close()
PY
}
cd "$work"

log "Inventory: ansible-inventory -i inventory --graph"
ansible-inventory -i inventory --graph | sed -n '1,12p'; echo "   ..."
counts

log "1. Audit before (read-only): ansible-playbook mailsec.sendgrid.audit -i inventory"
ansible-playbook mailsec.sendgrid.audit -i inventory -e audit_report_dir="$work/reports" | grep -E '"msg"| : ok=' | sed -n '1,8p'
head -8 reports/enforced_tls_audit.md; echo "   ..."
counts

log "2. Dry run: ansible-playbook mailsec.sendgrid.enforce -i inventory --check"
ansible-playbook mailsec.sendgrid.enforce -i inventory --check | grep -E ' : ok=' | sed -n '1,12p'
counts

log "3. Apply: ansible-playbook mailsec.sendgrid.enforce -i inventory"
ansible-playbook mailsec.sendgrid.enforce -i inventory | grep -E ' : ok=' | sed -n '1,12p'
counts

log "4. Apply again (nothing to do, no PATCH): ansible-playbook mailsec.sendgrid.enforce -i inventory"
ansible-playbook mailsec.sendgrid.enforce -i inventory | grep -E ' : ok=' | sed -n '1,12p'
counts

log "5. Audit after: fully compliant (fail_on_drift=true would fail otherwise)"
ansible-playbook mailsec.sendgrid.audit -i inventory -e audit_report_dir="$work/reports" -e fail_on_drift=true | grep -E '"msg"| : ok=' | sed -n '1,8p'
counts
log "Reports: $work/reports/enforced_tls_audit.{json,md}"
