#!/usr/bin/env bash
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The enforced_tls_policy role over a static inventory of four subusers, against a simulator started for this target.
set -euxo pipefail
key=integration-test-key-0f1e2d3c
started=$(../setup_sendgrid_sim/files/start_sendgrid_sim.sh "$OUTPUT_DIR" 600 --api-key "$key" --subusers 4)
read -r pid url <<< "$started"
trap 'kill "$pid"' EXIT
# Where the role finds the key and the API when its variables do not say (as with AWX's credential type).
export SENDGRID_API_KEY="$key" SENDGRID_API_URL="$url"
ansible-playbook -i inventory converge.yml "$@"
