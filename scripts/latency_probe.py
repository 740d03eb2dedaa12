#!/usr/bin/env python3
"""Produce-to-queryable latency: sends playback events to Kafka at a fixed
rate (kafka-python) and, for one event in every PROBE_EVERY, measures the time
from the broker's acknowledgement to the moment its profile node is readable
through rdg's HTTP API (`GET /v1/nodes/profile/ID` answering 200).

usage: latency_probe.py BROKERS TOPIC API_URL RATE SECONDS
Prints p50/p90/p99/max in ms and the rate actually sent.
"""
import json
import sys
import threading
import time
import urllib.request

from kafka import KafkaProducer

PROBE_EVERY = 200


def main() -> int:
    brokers, topic, api, rate, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    producer = KafkaProducer(bootstrap_servers=brokers, linger_ms=2, acks=1)
    acked = {}
    lock = threading.Lock()
    probes = []
    done = threading.Event()

    def on_ack(pid):
        def cb(_meta):
            with lock:
                acked[pid] = time.monotonic()
        return cb

    def poller():
        latencies = []
        while not (done.is_set() and not probes):
            with lock:
                pid = probes[0] if probes else None
                t_ack = acked.get(pid) if pid else None
            if pid is None or t_ack is None:
                time.sleep(0.001)
                continue
            url = f"{api}/v1/nodes/profile/{pid}"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except urllib.error.HTTPError as e:
                    if e.code != 404:
                        raise
                time.sleep(0.001)
            latencies.append((time.monotonic() - t_ack) * 1000.0)
            with lock:
                probes.pop(0)
        result.extend(latencies)

    result = []
    t = threading.Thread(target=poller)
    t.start()
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        target = start + i / rate
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        pid = f"lat-{start:.0f}-{i}"
        ev = {"ts": int(time.time() * 1000), "event": "play_start", "account_id": f"lat-acc{i % 1000}",
              "profile_id": pid, "title_id": f"title{i % 100}", "device_id": f"lat-dev{i % 500}"}
        fut = producer.send(topic, key=ev["account_id"].encode(), value=json.dumps(ev).encode())
        if i % PROBE_EVERY == 0:
            with lock:
                probes.append(pid)
            fut.add_callback(on_ack(pid))
        i += 1
    producer.flush()
    sent_rate = i / (time.monotonic() - start)
    done.set()
    t.join()
    result.sort()
    if not result:
        print("no probes measured")
        return 1
    q = lambda p: result[min(len(result) - 1, int(p * len(result)))]
    print(f"sent {i} events at {sent_rate:.0f}/s (asked {rate:.0f}/s); {len(result)} probes: "
          f"p50 {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, p99 {q(0.99):.1f} ms, max {result[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
