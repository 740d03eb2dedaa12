"""Shared measuring tools: clocks, load average, rate series, percentiles,
lookup loops, JSON results."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable


def now() -> float:
    return time.perf_counter()


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return [round(x, 2) for x in os.getloadavg()]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


@dataclass
class RateSeries:
    """Cumulative (seconds since start, events done) points of one ingest."""
    points: list = field(default_factory=lambda: [(0.0, 0)])

    def add(self, seconds: float, events: int) -> None:
        self.points.append((seconds, events))

    def total(self) -> tuple[float, int]:
        return self.points[-1]

    def rate(self) -> float:
        secs, n = self.total()
        return n / secs if secs > 0 else float("nan")

    def _time_at(self, events: float) -> float | None:
        """Seconds when `events` were done (linear between points)."""
        pts = self.points
        for (t0, n0), (t1, n1) in zip(pts, pts[1:]):
            if n1 >= events:
                if n1 == n0:
                    return t1
                return t0 + (t1 - t0) * (events - n0) / (n1 - n0)
        return None

    def window_rate(self, lo: float, hi: float) -> float | None:
        """Rate over the events between the fractions lo and hi of the total,
        or None when the series is too coarse to tell (fewer than 3 points
        inside the run, as for a run shorter than its sampling period)."""
        _secs, n = self.total()
        if len(self.points) < 4 or n == 0:
            return None
        a, b = self._time_at(lo * n), self._time_at(hi * n)
        if a is None or b is None or b <= a:
            return None
        return (hi - lo) * n / (b - a)

    def summary(self) -> dict:
        secs, n = self.total()
        return {
            "events": n,
            "seconds": secs,
            "rate": self.rate(),
            "first10": self.window_rate(0.0, 0.1),
            "last10": self.window_rate(0.9, 1.0),
            "points": self.points,
        }


def time_lookups(ask: Callable[[str], list], keys: list[str], seconds: float,
                 max_calls: int) -> dict:
    """Asks for keys one after the other (one client, no concurrency) until
    `seconds` pass or `max_calls` are made: throughput, p50/p90/p99 in ms,
    and every latency (for the plot)."""
    lat = []
    rows = 0
    start = now()
    deadline = start + seconds
    i = 0
    while i < max_calls and (i == 0 or now() < deadline):
        key = keys[i % len(keys)]
        t0 = now()
        rows += len(ask(key))
        lat.append((now() - t0) * 1000)
        i += 1
    elapsed = now() - start
    s = sorted(lat)
    return {
        "calls": len(lat),
        "seconds": elapsed,
        "per_s": len(lat) / elapsed if elapsed > 0 else float("nan"),
        "rows_per_call": rows / max(len(lat), 1),
        "p50_ms": percentile(s, 50),
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "latencies_ms": lat,
    }


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=_default))
    tmp.replace(path)


def _default(o):
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def log(*args) -> None:
    print("[compare]", *args, file=sys.stderr, flush=True)


def fmt_rate(x) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:,.0f}"


def fmt_ms(x) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


def chunks(xs: Iterable, n: int):
    buf = []
    for x in xs:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
