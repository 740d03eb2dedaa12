#!/usr/bin/env python3
"""Produce-to-queryable latency: sends playback events to Kafka at a fixed
rate (kafka-python) and, for about 25 events a second, measures the time
from the broker's acknowledgement to the moment its profile node is readable
through rdg's HTTP API (`GET /v1/nodes/profile/ID` answering 200).

usage: latency_probe.py BROKERS TOPIC API_URL RATE SECONDS
Prints p50/p90/p99/max in ms and the rate actually sent. PROBE_TRACE=FILE
also writes each probe's acknowledgement (Unix time, s) and latency (ms) to
FILE, a line each, to line up with rdg's own logs. PROBE_POLL_MS (default
1) is how long the probe waits between two reads of a probe not yet
readable: each read costs this process and rdg's HTTP server CPU on the
cores rdg shares with them. PROBE_LINGER_MS sets its
producer's linger (default 20 ms, ~10 events a batch at 500 events/s; with
2 ms each event was a produce request of its own, which the benchmark's
broker, on the same two cores, paid for in CPU; the latency counts from the
acknowledgement either way). PROBE_TIMEOUT_S (default 120) bounds the wait
for one probe: a probe the broker acknowledged that is still not readable
then is reported as never readable (its partition and offset, an event rdg
did not make queryable), the probe goes on with the next, and the script
exits with status 2 at the end.
"""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

from kafka import KafkaProducer

PROBES_PER_SECOND = 25


def main() -> int:
    brokers, topic, api, rate, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    # One event in every `every` is a probe: about 25 a second at any rate.
    every = max(1, round(rate / PROBES_PER_SECOND))
    # Latency counts from the acknowledgement, whatever the linger.
    linger = int(os.environ.get("PROBE_LINGER_MS", "20"))
    poll = float(os.environ.get("PROBE_POLL_MS", "1")) / 1000.0
    timeout = float(os.environ.get("PROBE_TIMEOUT_S", "120"))
    producer = KafkaProducer(bootstrap_servers=brokers, linger_ms=linger, acks=1)
    acked = {}
    lock = threading.Lock()
    probes = []
    done = threading.Event()

    where = {}

    def on_ack(pid):
        def cb(meta):
            with lock:
                acked[pid] = time.monotonic()
                where[pid] = f"{meta.topic}/{meta.partition}/{meta.offset}"
        return cb

    # One kept-alive connection: a new TCP connection per try would cost
    # rdg's server (and this probe) more than the lookup itself.
    url = urllib.parse.urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=2)

    def readable(path):
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        if r.status not in (200, 404):
            raise RuntimeError(f"GET {path}: HTTP {r.status}")
        return r.status == 200

    def poller():
        latencies = []
        while not (done.is_set() and not probes):
            with lock:
                pid = probes[0] if probes else None
                t_ack = acked.get(pid) if pid else None
            if pid is None or t_ack is None:
                time.sleep(0.001)
                continue
            path = f"/v1/nodes/profile/{pid}"
            while not readable(path):
                if time.monotonic() - t_ack > timeout:
                    with lock:
                        never.append(f"{pid} ({where.get(pid)})")
                    break
                time.sleep(poll)
            else:
                latencies.append((t_ack - start, (time.monotonic() - t_ack) * 1000.0))
            with lock:
                probes.pop(0)
        result.extend(latencies)

    result = []
    never = []
    t = threading.Thread(target=poller)
    t.start()
    start = time.monotonic()
    wall0 = time.time()
    i = 0
    # PROBE_WARMUP_S: send at the rate for this long before the first probe
    # (the probe's own start-up, its connections and first events, is not
    # measured); default 0.
    warmup = float(os.environ.get("PROBE_WARMUP_S", "0"))
    while time.monotonic() - start < warmup + seconds:
        target = start + i / rate
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        pid = f"lat-{start:.0f}-{i}"
        ev = {"ts": int(time.time() * 1000), "event": "play_start", "account_id": f"lat-acc{i % 1000}",
              "profile_id": pid, "title_id": f"title{i % 100}", "device_id": f"lat-dev{i % 500}"}
        fut = producer.send(topic, key=ev["account_id"].encode(), value=json.dumps(ev).encode())
        if i % every == 0 and now - start >= warmup:
            with lock:
                probes.append(pid)
            fut.add_callback(on_ack(pid))
        i += 1
    producer.flush()
    sent_rate = i / (time.monotonic() - start)
    done.set()
    t.join()
    trace = os.environ.get("PROBE_TRACE")
    if trace:
        with open(trace, "w") as f:
            f.writelines(f"{at + wall0:.3f} {ms:.1f}\n" for at, ms in result)
    result = sorted(ms for _, ms in result)
    if never:
        print(f"{len(never)} probes acknowledged by the broker were not readable within {timeout:.0f} s: "
              + ", ".join(never[:20]))
    if not result:
        print("no probes measured")
        return 1
    q = lambda p: result[min(len(result) - 1, int(p * len(result)))]
    print(f"sent {i} events at {sent_rate:.0f}/s (asked {rate:.0f}/s); {len(result)} probes: "
          f"p50 {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, p99 {q(0.99):.1f} ms, max {result[-1]:.1f} ms")
    return 2 if never else 0


if __name__ == "__main__":
    sys.exit(main())
