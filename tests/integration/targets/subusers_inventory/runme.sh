#!/usr/bin/env bash
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The subusers inventory plugin against a simulator started for this target: what ansible-inventory makes of
# inventory/ (the plugin's configuration, with group_vars and host_vars next to it), then the collection's enforce
# playbook over that inventory: check mode, apply, apply again.
set -euxo pipefail
key=integration-test-key-0f1e2d3c
# Twelve subusers: sub0003, sub0006, sub0009 and sub0012 in the EU region, sub0005 and sub0010 disabled.
started=$(../setup_sendgrid_sim/files/start_sendgrid_sim.sh "$OUTPUT_DIR" 600 --api-key "$key" --subusers 12 \
  --eu-every 3 --disabled-every 5)
read -r pid url <<< "$started"
trap 'kill "$pid"' EXIT
# The plugin's options api_key and api_url come from these (their env: entries), and so do the role's.
export SENDGRID_API_KEY="$key" SENDGRID_API_URL="$url"
# A source that fails must fail the command, not leave a warning and an empty inventory.
export ANSIBLE_INVENTORY_UNPARSED_FAILED=true

ansible-inventory -i inventory --list --yaml --output "$OUTPUT_DIR/list.yml"
ansible-inventory -i inventory --host sub0002 > "$OUTPUT_DIR/sub0002.json"
ansible-inventory -i inventory --host sub0003 > "$OUTPUT_DIR/sub0003.json"
ansible-inventory -i exact.sendgrid.yml --list --yaml --output "$OUTPUT_DIR/exact.yml"
ansible-playbook verify_inventory.yml "$@"

ansible-playbook -i inventory mailsec.sendgrid.enforce --check "$@" | tee "$OUTPUT_DIR/check.log"
ansible-playbook -i inventory verify_state.yml -e expect=defaults "$@"
ansible-playbook -i inventory mailsec.sendgrid.enforce "$@" | tee "$OUTPUT_DIR/apply.log"
ansible-playbook -i inventory verify_state.yml -e expect=policy "$@"
ansible-playbook -i inventory mailsec.sendgrid.enforce "$@" | tee "$OUTPUT_DIR/again.log"
ansible-playbook -i inventory verify_state.yml -e expect=policy "$@"
# Each of the ten subuser hosts: would change, changed, then unchanged.
[ "$(grep -cE '^sub[0-9]{4} +: ok=[0-9]+ +changed=1 ' "$OUTPUT_DIR/check.log")" = 10 ]
[ "$(grep -cE '^sub[0-9]{4} +: ok=[0-9]+ +changed=1 ' "$OUTPUT_DIR/apply.log")" = 10 ]
[ "$(grep -cE '^sub[0-9]{4} +: ok=[0-9]+ +changed=0 ' "$OUTPUT_DIR/again.log")" = 10 ]
