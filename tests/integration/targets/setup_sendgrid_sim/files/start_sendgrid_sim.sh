#!/usr/bin/env bash
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Start the collection's SendGrid simulator (tests/simulator/sendgrid_sim.py) in the background and print
# "PID URL" once it listens on a free loopback port.
# Usage: start_sendgrid_sim.sh DIR LIFETIME [simulator options, e.g. --api-key KEY --subusers N]
# It stops on SIGTERM (kill PID) or after LIFETIME seconds at the latest, so that a run which ends before it
# could stop the simulator leaves nothing behind. Its log is DIR/sendgrid_sim.log. $PYTHON runs it (python3).
set -euo pipefail
dir=$1
lifetime=$2
shift 2
simulator="$(cd "$(dirname "$0")/../../../.." && pwd)/simulator/sendgrid_sim.py"
rm -f "$dir/url"
timeout "$lifetime" "${PYTHON:-python3}" "$simulator" --port 0 --url-file "$dir/url" "$@" \
  > "$dir/sendgrid_sim.log" 2>&1 < /dev/null &
pid=$!
for _ in $(seq 100); do
  if [ -s "$dir/url" ]; then
    echo "$pid $(cat "$dir/url")"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
echo "the SendGrid simulator did not start:" >&2
cat "$dir/sendgrid_sim.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
