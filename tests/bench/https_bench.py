# -*- coding: utf-8 -*-
"""The enforce playbook in check mode over HTTPS, per subuser, for one or more checkouts of the collection.

make bench talks plain HTTP to the simulator, so it cannot show what TLS costs each subuser host's worker process (a
CA bundle to load, a handshake). Here the simulator answers over TLS (a trustme certificate) and the client verifies
with certifi's bundle plus the test CA (REQUESTS_CA_BUNDLE, the size of a real system bundle); each checkout runs twice,
alternating, and the faster run counts. Compare checkouts of one run, not figures across runs.

Usage: python tests/bench/https_bench.py [--subusers 200] [--latency-ms 20] CHECKOUT [CHECKOUT ...]
(for an older commit: git worktree add /tmp/before REV, then pass /tmp/before and .)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import certifi

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.simulator import sendgrid_sim  # noqa: E402  pylint: disable=wrong-import-position
from tests.tls_servers import Certificates, server_context  # noqa: E402  pylint: disable=wrong-import-position

KEY = 'bench-key'
POLICY = dict(enforced_tls_policy_require_tls=True, enforced_tls_policy_require_valid_cert=True, enforced_tls_policy_version='1.2')


class TLSServer(sendgrid_sim._Server):  # pylint: disable=protected-access
    """The simulator's server, each accepted connection wrapped in TLS."""

    context = None

    def get_request(self):
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


def run_once(checkout, workdir, inventory, url, bundle):
    """(wall seconds, CPU seconds of ansible-playbook and its workers) of one check run with ``checkout``."""
    collections = workdir / ('collections-%s' % abs(hash(str(checkout)))) / 'ansible_collections' / 'mailsec'
    collections.mkdir(parents=True, exist_ok=True)
    if not (collections / 'sendgrid').exists():
        (collections / 'sendgrid').symlink_to(checkout)
    env = dict(os.environ, SENDGRID_API_KEY=KEY, SENDGRID_API_URL=url, REQUESTS_CA_BUNDLE=str(bundle), ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=str(collections.parent.parent), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false')
    before, start = os.times(), time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / 'ansible-playbook'), 'mailsec.sendgrid.enforce', '-i', str(inventory),
                           '-e', json.dumps(POLICY), '--check'], env=env, cwd=workdir, capture_output=True, text=True, check=False)
    wall, after = time.monotonic() - start, os.times()
    if proc.returncode != 0:
        raise RuntimeError('%s failed:\n%s' % (checkout, proc.stdout[-3000:] + proc.stderr[-3000:]))
    return wall, after.children_user - before.children_user + after.children_system - before.children_system


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkouts', nargs='+', type=lambda path: Path(path).resolve())
    parser.add_argument('--subusers', type=int, default=200)
    parser.add_argument('--latency-ms', type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        certificates = Certificates(workdir)
        bundle = workdir / 'bundle.pem'
        bundle.write_text(Path(certifi.where()).read_text() + Path(certificates.ca_file).read_text())
        TLSServer.context = server_context(certificates.good)
        sendgrid_sim._Server = TLSServer  # pylint: disable=protected-access
        simulator = sendgrid_sim.Simulator(api_keys=(KEY,), subusers=options.subusers, latency=options.latency_ms / 1000.0)
        url = simulator.start().replace('http://', 'https://')
        try:
            inventory = workdir / 'bench.sendgrid.yml'
            inventory.write_text('plugin: mailsec.sendgrid.subusers\napi_url: %s\n' % url)
            best = {}
            for dummy in range(2):
                for checkout in options.checkouts:
                    best[checkout] = min(best.get(checkout, (float('inf'), 0.0)), run_once(checkout, workdir, inventory, url, bundle))
        finally:
            simulator.stop()
    print('%d subusers over HTTPS, %d ms latency, check mode, default (per-subuser) mode, the faster of two runs:\n'
          % (options.subusers, options.latency_ms))
    print('| checkout | wall (s) | CPU of ansible-playbook and its workers (s) |\n| --- | --- | --- |')
    for checkout, (wall, cpu) in best.items():
        print('| %s | %.1f | %.1f |' % (checkout, wall, cpu))


if __name__ == '__main__':
    main()
