# -*- coding: utf-8 -*-
# Copyright (c) mailsec.sendgrid contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The connection options every plugin of the collection shares.
    DOCUMENTATION = r"""
options:
  api_key:
    description:
      - A SendGrid API key of the parent account, with the C(user.settings.enforced_tls) scopes
        (and C(subusers.read) for the inventory plugin).
      - If not set, the environment variable E(SENDGRID_API_KEY) is used. Required in the end.
      - Surrounding whitespace is removed (a key read from a vault file or a YAML block ends in a newline);
        any other space, control or non-ASCII character is refused before any request, naming the character's
        code point, never the key.
      - The key is never printed, not in results, diffs, error messages or logs, in any form (as is, escaped,
        in an C(Authorization) header or base64-encoded), even when a server echoes it back.
      - It is the only credential sent. A C(.netrc) file is never read.
    type: str
  region:
    description:
      - The SendGrid region whose API is called.
      - V(global) is U(https://api.sendgrid.com), V(eu) is U(https://api.eu.sendgrid.com) (EU regional subusers).
      - If not set, the environment variable E(SENDGRID_REGION) is used, else V(global).
      - Ignored when O(api_url) is set.
    type: str
    choices: [global, eu]
    default: global
  api_url:
    description:
      - Base URL of the API, overriding O(region). For example SendGrid's TLS 1.2 test host
        U(https://tls12.api.sendgrid.com), a proxy, or the collection's local simulator.
      - C(http://) is refused unless the host is loopback (V(127.0.0.1), V(::1), V(localhost)).
      - Proxies from the environment (E(HTTPS_PROXY) and friends) are used, except for a loopback host, which is
        always reached directly (a proxy would receive the key of an C(http://) request in clear).
      - If not set, the environment variable E(SENDGRID_API_URL) is used.
    type: str
  timeout:
    description:
      - Seconds to wait for each HTTP request.
    type: float
    default: 30
  validate_certs:
    description:
      - Verify the API's TLS certificate. Set to V(false) only against a test endpoint you control;
        a warning is printed when it is off.
      - Whatever this says, connections below TLS 1.2 are always refused.
    type: bool
    default: true
  max_retries:
    description:
      - How many times to retry a request answered with HTTP 429, 500, 502, 503 or 504, or that failed to connect or timed out.
      - A 429 waits as long as C(Retry-After) (or C(X-RateLimit-Reset)) says, and pauses every parallel worker of the task;
        other failures back off exponentially with jitter. Each wait is capped at 60 seconds.
      - A 429 that carries C(X-RateLimit-Reset) (SendGrid's rate limit, read as an epoch or as seconds until the reset) is
        waited out without counting as a retry, up to 20 such waits and 300 seconds of waiting for the rate limit per
        request; beyond either, it counts as a retry again. So one request waits at most 300 + O(max_retries) x 60
        seconds for the rate limit.
      - Every request reads C(X-RateLimit-Remaining) and C(X-RateLimit-Reset) and, once less than half of the window is
        left, spreads what is left evenly until the reset, so that parallel workers (and two runs on one key) do not
        collect 429s.
    type: int
    default: 5
requirements:
  - requests (Python library)
notes:
  - Every HTTPS connection requires TLS 1.2 or newer, as SendGrid does.
"""

    # The account a module acts on (the inventory plugin lists the parent's subusers: it has no such option).
    ON_BEHALF_OF = r"""
options:
  on_behalf_of:
    description:
      - Act on a subuser (its username) or a customer account (V(account-id <id>)) with the parent's key.
        Sent as the C(on-behalf-of) header.
      - Leave it out to address the parent account itself; an empty string is refused.
    type: str
"""

    # Attribute descriptions shared by every module.
    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying anything.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description: When run twice with the same options, the second run changes nothing and writes nothing.
"""

    # Membership of the API modules in the group/mailsec.sendgrid.api action group.
    ACTION_GROUP = r"""
attributes:
  action_group:
    description: Use C(group/mailsec.sendgrid.api) in C(module_defaults) to set the connection options once for every module.
    support: full
    membership:
      - mailsec.sendgrid.api
"""

    # Attributes of read-only (*_info) modules.
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
    details:
      - This action does not modify state.
"""
