#!/usr/bin/env python3
"""Lookup latency while rdg ingests: one kept-alive HTTP connection asks
for a node (`GET /v1/nodes/account/ID`, 200 or 404 alike) every few
milliseconds and prints p50/p90/p99/max of the answers' times.

usage: read_probe.py API_URL SECONDS [DELAY_S]
Starts after DELAY_S seconds (default 0), so that it measures while the
load runs; pauses 5 ms after each answer.
"""
import http.client
import sys
import time
import urllib.parse


def main() -> int:
    api, seconds = sys.argv[1], float(sys.argv[2])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    url = urllib.parse.urlsplit(api)
    time.sleep(delay)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    latencies = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        started = time.monotonic()
        conn.request("GET", f"/v1/nodes/account/acc{i % 1000}")
        r = conn.getresponse()
        r.read()
        if r.status not in (200, 404):
            print(f"read_probe: HTTP {r.status}", file=sys.stderr)
            return 1
        latencies.append((time.monotonic() - started) * 1000.0)
        i += 1
        time.sleep(0.005)
    if not latencies:
        print("read_probe: no reads", file=sys.stderr)
        return 1
    latencies.sort()
    n = len(latencies)
    pct = lambda q: latencies[min(n - 1, int(n * q))]
    print(f"lookups while ingesting: {n} reads: p50 {pct(0.5):.2f} ms, p90 {pct(0.9):.2f} ms, "
          f"p99 {pct(0.99):.2f} ms, max {latencies[-1]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
