#!/usr/bin/env python3
"""An independent Kafka producer for rdg's real-broker test: sends every line
of the given JSON Lines files to a topic with kafka-python (a pure-Python
implementation of the protocol, not librdkafka), in file order.

usage: produce.py BROKERS TOPIC FILE [TOPIC FILE ...]
Prints the number of messages acknowledged; exits non-zero on any failure.
"""
import sys

from kafka import KafkaProducer


def main() -> int:
    if len(sys.argv) < 4 or len(sys.argv) % 2 != 0:
        print(__doc__, file=sys.stderr)
        return 2
    brokers = sys.argv[1]
    pairs = list(zip(sys.argv[2::2], sys.argv[3::2]))
    producer = KafkaProducer(
        bootstrap_servers=brokers,
        acks="all",
        # One in-flight request per connection keeps each partition in file order.
        max_in_flight_requests_per_connection=1,
        retries=5,
        linger_ms=5,
    )
    futures = []
    for topic, path in pairs:
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\n")
                if line:
                    futures.append(producer.send(topic, value=line))
    producer.flush(timeout=60)
    acked = 0
    for fut in futures:
        fut.get(timeout=60)  # raises on a failed delivery
        acked += 1
    producer.close(timeout=10)
    print(acked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
