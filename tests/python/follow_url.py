#!/usr/bin/env python3
"""The headless "browser" of the login tests: mcp-relay's --auth-url-command runs it with the
authorization URL as its last argument. It GETs the URL and follows redirects (the
conformance suite's mock authorization server redirects straight back to the relay's loopback
callback), printing nothing on stdout. Exit status 0 when the last response was 2xx."""

import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[-1], timeout=20) as r:
        sys.exit(0 if 200 <= r.status < 300 else 1)
except Exception as e:  # noqa: BLE001 - report and fail
    print(f"follow_url: {e}", file=sys.stderr)
    sys.exit(1)
