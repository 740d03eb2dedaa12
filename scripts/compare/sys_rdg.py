"""rdg, driven as its own binary: gen, replay, run from the tansu broker
(progress from its status lines), serve, export, HTTP lookups, the
in-process query bench, and the identity update measured on a live `rdg
run`."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

from harness import RateSeries, now

ROOT = Path(__file__).resolve().parents[2]


class Rdg:
    def __init__(self, binary: Path, dataflows: Path, workers: int):
        self.bin = str(binary)
        self.dataflows = str(dataflows)
        self.workers = workers

    def version(self) -> str:
        return subprocess.run([self.bin, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    def gen(self, events: int, seed: int, out: Path) -> list[Path]:
        subprocess.run([self.bin, "gen", "--events", str(events), "--seed", str(seed), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        return [out / f"{t}.jsonl" for t in ("playback", "gaming", "login")]

    # --- replay -----------------------------------------------------------------
    def replay(self, files: list[Path], state: Path, total_lines: int) -> dict:
        """`rdg replay` into `state` (fresh), timed by the wall clock around
        the process. rdg replay shows no committed progress (its progress
        bar, drawn only on a terminal, counts bytes read, which runs far
        ahead of the commits), so there is no rate over time: only the
        start and the end."""
        cmd = [self.bin, "replay", "--dataflows", self.dataflows, "--workers", str(self.workers),
               "--state", str(state), "--json", *map(str, files)]
        t0 = now()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = now() - t0
        if p.returncode != 0:
            raise RuntimeError(f"rdg replay failed ({p.returncode}): {p.stderr[-2000:]}")
        series = RateSeries()
        series.add(wall, total_lines)
        return {"summary": json.loads(p.stdout), "seconds": wall, "ingest": series.summary()}

    def export_state(self, state: Path, out: Path) -> None:
        with open(out, "wb") as f:
            subprocess.run([self.bin, "export", "--state", str(state)], stdout=f, check=True)

    def export_url(self, url: str, out: Path) -> None:
        with open(out, "wb") as f:
            subprocess.run([self.bin, "export", "--url", url], stdout=f, check=True)

    # --- serve ------------------------------------------------------------------
    def serve(self, state: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
        logf = open(log_path, "w")
        p = subprocess.Popen([self.bin, "serve", "--state", str(state), "--listen", "127.0.0.1:0"],
                             stderr=logf, stdout=subprocess.DEVNULL)
        url = wait_for_url(log_path, p)
        return p, url

    # --- run from Kafka -----------------------------------------------------------
    def run_live(self, brokers: str, state: Path, listen: str, log_path: Path,
                 expected: int, total_lines: int, timeout: float) -> tuple[subprocess.Popen, dict]:
        """Starts `rdg run` on topics that already hold every event, and
        returns once its status line shows `expected` records (events + dead
        letters, as the replay counted them) committed. The rate over time
        comes from the status lines (one a second), scaled from records to
        input lines. The process is left running (serving on `listen`)."""
        logf = open(log_path, "w")
        t0 = now()
        p = subprocess.Popen([self.bin, "run", "--dataflows", self.dataflows, "--workers", str(self.workers),
                              "--state", str(state), "--brokers", brokers, "--status-interval", "1",
                              "--listen", listen], stderr=logf, stdout=subprocess.DEVNULL)
        series = RateSeries()
        seen = 0
        scale = total_lines / max(expected, 1)
        with open(log_path) as f:
            while True:
                line = f.readline()
                if not line:
                    if p.poll() is not None:
                        raise RuntimeError(f"rdg run exited ({p.returncode}): {tail_of(log_path)}")
                    if now() - t0 > timeout:
                        p.kill()
                        raise RuntimeError(f"rdg run did not commit {expected} records within {timeout:.0f} s: "
                                           f"{tail_of(log_path)}")
                    time.sleep(0.05)
                    continue
                if not line.startswith("status: "):
                    continue
                got = sum(int(e) + int(d) for e, d in
                          re.findall(r"\((\d+) events\).*?dead letters (\d+)", line))
                t = now() - t0
                if got > seen:
                    seen = got
                    series.add(t, int(min(got, expected) * scale))
                if got >= expected:
                    break
        return p, {"seconds": series.total()[0], "ingest": series.summary()}

    def start_run(self, brokers: str, state: Path, listen: str, log_path: Path) -> tuple[subprocess.Popen, str]:
        """`rdg run` continuing `state`, serving on `listen`; returns at once
        (wait_ready tells when it has rebuilt the state)."""
        logf = open(log_path, "w")
        p = subprocess.Popen([self.bin, "run", "--dataflows", self.dataflows, "--workers", str(self.workers),
                              "--state", str(state), "--brokers", brokers, "--listen", listen],
                             stderr=logf, stdout=subprocess.DEVNULL)
        return p, f"http://{listen}"

    def produce_generated(self, brokers: str, events: int, seed: int) -> None:
        subprocess.run([self.bin, "produce", "--dataflows", self.dataflows, "--brokers", brokers,
                        "--events", str(events), "--seed", str(seed), "--partitions", "4"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def tail_of(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text()[-n:]
    except OSError:
        return ""


def wait_for_url(log_path: Path, p: subprocess.Popen, timeout: float = 120) -> str:
    deadline = now() + timeout
    while now() < deadline:
        m = re.search(r"http://127\.0\.0\.1:\d+", tail_of(log_path, 100_000))
        if m:
            return m.group(0)
        if p.poll() is not None:
            raise RuntimeError(f"rdg exited ({p.returncode}): {tail_of(log_path)}")
        time.sleep(0.05)
    raise RuntimeError(f"rdg did not start serving within {timeout} s: {tail_of(log_path)}")


def wait_ready(url: str, timeout: float = 300) -> None:
    deadline = now() + timeout
    u = urllib.parse.urlparse(url)
    while now() < deadline:
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout} s")


class Http:
    """One keep-alive HTTP/1.1 connection (a plain Python client, as the
    databases' Python clients are used)."""

    def __init__(self, url: str):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    def get(self, path: str):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, body

    def get_json(self, path: str):
        status, body = self.get(path)
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)


def neighbour_asker(url: str, edge_type: str, from_type: str):
    """id -> neighbour ids, over HTTP: one page of up to 1,000 (the largest
    page rdg serves; the sampled lists are shorter), then the next pages."""
    h = Http(url)

    def ask(src: str) -> list[str]:
        base = f"/v1/edges/{edge_type}/{from_type}/{urllib.parse.quote(src, safe='')}?limit=1000"
        out = []
        path = base
        while True:
            page = h.get_json(path)
            if page is None:
                return out
            out.extend(item["node"].split(":", 1)[1] for item in page["items"])
            cur = page.get("next_cursor")
            if not cur:
                return out
            path = base + "&cursor=" + urllib.parse.quote(cur, safe="")
    return ask


def inprocess_bench(state: Path, seconds: int, log_path: Path) -> dict:
    """`cargo bench --bench query -- STATE SECONDS` of this worktree's source
    (the store read a request makes, without HTTP): first 10 neighbours of
    `watched`, by id, 1 and 2 threads. Mean time only (the bench reports no
    percentiles)."""
    cmd = ["nice", "-n", "10", "cargo", "bench", "--quiet", "--bench", "query", "--", str(state), str(seconds)]
    with open(log_path, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"cargo bench failed ({r.returncode}): {tail_of(log_path)}")
    out = {"command": " ".join(cmd[3:]), "stdout": r.stdout}
    for m in re.finditer(r"edges watched, 10 by id\s+(\d) thread\(s\):\s+([\d.]+) lookups/s \(([\d.]+) µs", r.stdout):
        out[f"threads{m.group(1)}"] = {"per_s": float(m.group(2)), "mean_us": float(m.group(3))}
    if "threads1" not in out:
        raise RuntimeError(f"cargo bench printed no 'edges watched, 10 by id' line: {r.stdout[-1500:]}")
    return out


def wrk_max(url: str, path_lua: Path, seconds: int, out_path: Path) -> dict:
    """wrk -t2 -c64 against edge lookups: the most rdg serves (the load
    generator shares the two cores)."""
    r = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s", str(path_lua), url],
                       capture_output=True, text=True, timeout=seconds + 60)
    out_path.write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr[-500:]}")

    def ms(v):
        n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
        return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
    pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", r.stdout, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    return {"per_s": rps, "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "non_2xx": int(bad.group(1)) if bad else 0}


def identity_update(url: str, brokers: str, pairs: list, ts_s: int, timeout: float = 60) -> dict:
    """rdg's incremental identity update on a live `rdg run`: for each
    (account, device) pair in different clusters, one login event linking
    them is produced (kafka-python, acks=1) and `GET /v1/identity/device/ID`
    is polled (1 ms pauses, one keep-alive connection) until the account is
    among the device's cluster members; then the same event with
    `"op":"delete"` is produced and polled until it is not. Time per change
    = from the send to the first answer that shows it: the broker round
    trip, rdg's consumption, the dataflow's identity update, its commit and
    one HTTP read. The event time is the login topic's latest, so no
    watermark moves and nothing expires."""
    from kafka import KafkaProducer
    prod = KafkaProducer(bootstrap_servers=brokers, linger_ms=0, acks=1)
    h = Http(url)
    out = []
    try:
        for account, device in pairs:
            a_id = account.split(":", 1)[1]
            d_id = device.split(":", 1)[1]
            ev = {"ts": ts_s, "result": "success", "account_id": a_id, "device_id": d_id,
                  "method": "password", "geo": {"country": "NL"}}
            for op in ("add", "delete"):
                body = dict(ev, op="delete") if op == "delete" else ev
                t0 = now()
                prod.send("login", key=a_id.encode(), value=json.dumps(body).encode()).get(timeout=30)
                acked = now() - t0
                while True:
                    r = h.get_json(f"/v1/identity/device/{urllib.parse.quote(d_id, safe='')}")
                    members = set(r["members"]) if r else set()
                    if (account in members) == (op == "add"):
                        break
                    if now() - t0 > timeout:
                        raise RuntimeError(f"identity of {device} did not show the {op} of a link to {account} "
                                           f"within {timeout} s (last answer {r})")
                    time.sleep(0.001)
                out.append({"op": op, "account": account, "device": device, "seconds": now() - t0,
                            "ack_seconds": acked})
    finally:
        prod.close()
    return {"changes": out}
