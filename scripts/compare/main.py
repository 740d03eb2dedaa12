"""The side-by-side comparison (run through scripts/compare/run.sh, which
prepares the venv and the rdg binary). Steps, in this order, one at a time:

 1. the events: `rdg gen` (or the given JSONL files);
 2. rdg replay from the files into an empty state (streaming ingest from
    files, and rdg's bulk load), its export = the ground truth;
 3. the peers' input from the same events (events.py) and the export's CSVs;
 4. each graph database in its own process: streaming ingest + counts +
    sample + lookups, then bulk load + counts + sample (peer_run.py);
 5. rdg serve on the replayed state: lookups over HTTP (+ wrk when
    installed) and the sample; then the in-process query bench (cargo);
 6. rdg run from the tansu broker (streaming ingest from Kafka), its export
    compared with the replay's;
 7. identity, on a larger event set (--identity-events, ~1M links) unless
    told otherwise: rdg replay into a state, a live `rdg run` on it, links
    added and deleted through Kafka; networkx and igraph recomputing
    components after the same changes;
 8. results.json, BENCHMARKS.md and the plots (report.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import events as ev  # noqa: E402
import identity  # noqa: E402
import report  # noqa: E402
import sys_rdg  # noqa: E402
from cypher_embedded import graph_csv  # noqa: E402
from harness import loadavg, log, now, time_lookups, write_json  # noqa: E402

ROOT = sys_rdg.ROOT
HERE = Path(__file__).resolve().parent
PEERS = ["falkordb", "ladybug", "kuzu"]
# About 1M live identity links with the generator's defaults (measured: see
# BENCHMARKS.md "Identity" for the count of each run).
IDENTITY_EVENTS = 4_400_000
# The main event set: the largest whose whole run stays within about 45
# minutes on the 2-core machine (LadybugDB and Kuzu MERGE about 1,000
# events/s and slow down as their graph grows).
DEFAULT_EVENTS = 400_000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("events_pos", nargs="?", type=int, help=f"events to generate (default {DEFAULT_EVENTS:,})")
    p.add_argument("--events", type=int, help="events to generate (same as the positional)")
    p.add_argument("--input", action="append", default=[], type=Path,
                   help="a JSONL file of events instead of generated ones; its topic is its name up to the "
                        "first dot (playback.jsonl), as for rdg replay; repeatable")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rdg-bin", type=Path, required=True)
    p.add_argument("--work", type=Path, default=ROOT / "target/compare/run")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--plots", type=Path, default=ROOT / "docs/benchmarks")
    p.add_argument("--lookup-seconds", type=float, default=10.0)
    p.add_argument("--lookup-max", type=int, default=100_000)
    p.add_argument("--identity-changes", type=int, default=5, help="links added then removed, each")
    p.add_argument("--identity-events", type=int, default=IDENTITY_EVENTS,
                   help="events of the set the identity update is measured on (rdg replay, then a live rdg run; "
                        "networkx, igraph), sized for about 1M identity links; 0: the main event set")
    p.add_argument("--broker-port", type=int, default=19097)
    p.add_argument("--unavailable", type=Path, help="JSON {system: reason} of peers run.sh could not install")
    p.add_argument("--command", default="", help="the command line, for the report")
    a = p.parse_args()
    a.events = a.events or a.events_pos or DEFAULT_EVENTS
    return a


def sh(*cmd, **kw) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw).stdout.strip()
    except Exception as e:
        return f"unknown ({e})"


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem,
        "os": platform.platform(), "python": platform.python_version(),
        "git": sh("git", "-C", str(ROOT), "describe", "--always", "--dirty"),
        "branch": sh("git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"),
    }


def count_lines(files) -> int:
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


def step(results: dict, name: str, fn):
    """Runs one measurement; an error is recorded under `name` and reported,
    never skipped silently."""
    log(f"{name} (load {loadavg()})")
    t0 = now()
    try:
        value = fn()
        results[name] = value
    except Exception as e:
        log(f"{name} FAILED: {type(e).__name__}: {e}")
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    log(f"{name} took {now() - t0:.1f} s")
    return results[name]


def compare_graph(observed: dict, sample_obs: list, expected: dict) -> dict:
    """A system's counts and sample of neighbour lists against the export."""
    problems = []
    if observed.get("vertices") != expected["vertices"]:
        problems.append(f"vertices {observed.get('vertices')} (export: {expected['vertices']})")
    if observed.get("edges") != expected["edges"]:
        problems.append(f"edges {observed.get('edges')} (export: {expected['edges']})")
    for t, n in expected["edges_by_type"].items():
        got = observed.get("edges_by_type", {}).get(t)
        if got is not None and got != n:
            problems.append(f"{t} edges {got} (export: {n})")
    wrong = 0
    example = None
    exp = {(t, s): lst for t, s, lst in expected["sample"]}
    for t, s, lst in sample_obs:
        want = exp.get((t, s))
        if sorted(lst) != want:
            wrong += 1
            if example is None:
                example = f"{t} of {s}: {sorted(lst)[:8]} (export: {want[:8] if want else want})"
    if wrong:
        problems.append(f"{wrong} of {len(sample_obs)} sampled neighbour lists differ, e.g. {example}")
    return {"agrees": not problems, "problems": problems, "sampled": len(sample_obs)}


def main() -> int:
    a = parse_args()
    work = a.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dataflows = ROOT / "dataflows"
    rdg = sys_rdg.Rdg(a.rdg_bin.resolve(), dataflows, a.workers)
    unavailable = json.loads(a.unavailable.read_text()) if a.unavailable and a.unavailable.exists() else {}
    started = datetime.datetime.now(datetime.timezone.utc)
    R: dict = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "command": a.command, "seed": a.seed, "workers": a.workers,
        "rdg_version": rdg.version(), "rdg_bin": str(a.rdg_bin), "unavailable": unavailable,
        "load_start": loadavg(),
    }
    R["versions"] = {"tansu": sh(str(Path.home() / ".cargo/bin/tansu"), "--version") or sh("tansu", "--version")}
    defs = ev.load_definitions(dataflows)
    settings = ev.load_settings(dataflows)
    blocklist = ev.blocklist_of(dataflows)
    node_schema, edge_schema = ev.schema(defs)

    # 1. events
    if a.input:
        files = [p.resolve() for p in a.input]
        R["input"] = {"files": [str(f) for f in files], "generated": False}
    else:
        files = rdg.gen(a.events, a.seed, work / "events")
        R["input"] = {"generated": True, "events": a.events, "seed": a.seed,
                      "command": f"rdg gen --events {a.events} --seed {a.seed}"}
    total = count_lines(files)
    R["input"]["lines"] = total
    log(f"{total} input lines in {len(files)} files")

    # 2. rdg replay: streaming ingest from files, and rdg's bulk load
    rep = step(R, "rdg_replay", lambda: {
        **rdg.replay(files, work / "replay-state", total), "load": loadavg(),
        "command": f"rdg replay --workers {a.workers} --state STATE --json {' '.join(f.name for f in files)}"})
    if rep.get("ok") is False:
        raise SystemExit(f"rdg replay failed, nothing to compare: {rep['error']}")
    export = work / "export.jsonl"
    rdg.export_state(work / "replay-state", export)
    graph = ev.read_export(export)
    nbrs = graph.neighbours()
    rng = random.Random(a.seed)
    sample = []
    for t in edge_schema:
        keys = sorted(k for k in nbrs if k[0] == t)
        sample += rng.sample(keys, min(100, len(keys)))
    expected = {
        "vertices": len(graph.vertices), "node_records": len(graph.node_records), "edges": len(graph.edges),
        "edges_by_type": {t: sum(1 for e in graph.edges if e[0] == t) for t in edge_schema},
        "sample": [[t, src.split(":", 1)[1], [d.split(":", 1)[1] for d in nbrs[(t, src)]]] for t, src in sample],
        "identity_entries": len(graph.identity),
    }
    R["expected"] = {k: v for k, v in expected.items() if k != "sample"}
    lookup_type = "watched"
    from_type = edge_schema[lookup_type][0]
    lk = sorted(src.split(":", 1)[1] for t, src in nbrs if t == lookup_type)
    rng.shuffle(lk)
    lookup_keys = lk[:5000]
    lens = [len(nbrs[(lookup_type, f"{from_type}:{k}")]) for k in lookup_keys]
    R["lookup"] = {"edge_type": lookup_type, "from_type": from_type, "keys": len(lookup_keys),
                   "mean_list": sum(lens) / max(len(lens), 1), "max_list": max(lens, default=0),
                   "seconds": a.lookup_seconds, "max_calls": a.lookup_max}

    # 3. the peers' input
    batches = work / "batches.pkl"
    t0 = now()
    R["peer_input"] = ev.write_batches(files, defs, blocklist, graph, batches)
    R["peer_input"]["csv"] = graph_csv(export, node_schema, edge_schema, work / "csv")
    R["peer_input"]["seconds"] = now() - t0
    spec = {"node_schema": node_schema, "edge_schema": edge_schema, "batches": str(batches),
            "csv_dir": str(work / "csv"), "work": str(work / "peers"),
            "sample": [[t, s] for t, s, _ in expected["sample"]],
            "lookup_edge_type": lookup_type, "lookup_keys": lookup_keys,
            "lookup_seconds": a.lookup_seconds, "lookup_max": a.lookup_max}
    (work / "spec.json").write_text(json.dumps(spec))

    # 4. the graph databases, each in its own process
    R["peers"] = {}
    for system in PEERS:
        R["peers"][system] = res = {}
        if system in unavailable:
            res["unavailable"] = unavailable[system]
            log(f"{system}: not installed: {unavailable[system]}")
            continue
        for task in ("stream", "bulk"):
            out = work / f"{system}-{task}.json"
            log(f"{system} {task} (load {loadavg()})")
            t0 = now()
            timeout = max(1800, total / 200)
            try:
                p = subprocess.run([sys.executable, str(HERE / "peer_run.py"), system, task,
                                    str(work / "spec.json"), str(out)],
                                   capture_output=True, text=True, timeout=timeout)
                r = json.loads(out.read_text()) if out.exists() else {
                    "ok": False, "error": f"exit {p.returncode} without a result: {p.stderr[-2000:]}"}
            except subprocess.TimeoutExpired:
                r = {"ok": False, "error": f"did not finish within {timeout:.0f} s"}
            if r.get("ok"):
                r["correctness"] = compare_graph(r["counts"], r["sample"], expected)
            else:
                log(f"{system} {task} FAILED: {r.get('error')}")
            r.pop("sample", None)
            res[task] = r
            log(f"{system} {task} took {now() - t0:.1f} s")
        shutil.rmtree(work / "peers", ignore_errors=True)

    # 5. rdg serve: lookups over HTTP, then in process
    def http_lookups():
        server, url = rdg.serve(work / "replay-state", work / "serve.log")
        try:
            sys_rdg.wait_ready(url)
            ask = sys_rdg.neighbour_asker(url, lookup_type, from_type)
            obs = [[t, s, ask_t(url, t, edge_schema, s)] for t, s, _ in expected["sample"]]
            for key in lookup_keys[:200]:
                ask(key)
            out = {"lookups": time_lookups(ask, lookup_keys, a.lookup_seconds, a.lookup_max),
                   "load": loadavg(), "correctness": compare_graph(
                       {"vertices": expected["vertices"], "edges": expected["edges"]}, obs, expected)}
            out["correctness"]["note"] = "counts are the export's own; the sample is read over HTTP"
            if shutil.which("wrk"):
                lua = work / "edges.lua"
                ids = ",".join(json.dumps(k) for k in lookup_keys)
                lua.write_text(f"local ids = {{{ids}}}\nlocal n = 0\nrequest = function()\n  n = n + 1\n"
                               f"  return wrk.format(\"GET\", \"/v1/edges/{lookup_type}/{from_type}/\" .. "
                               f"ids[(n * 7919) % #ids + 1] .. \"?limit=1000\")\nend\n")
                try:
                    out["wrk"] = {**sys_rdg.wrk_max(url, lua, int(a.lookup_seconds), work / "wrk.txt"),
                                  "load": loadavg(), "command": f"wrk -t2 -c64 -d{int(a.lookup_seconds)}s"}
                except Exception as e:
                    out["wrk"] = {"ok": False, "error": str(e)}
            else:
                out["wrk"] = {"ok": False, "error": "wrk is not installed (apt-get install wrk)"}
            return out
        finally:
            sys_rdg.stop(server)
    step(R, "rdg_http", http_lookups)
    if shutil.which("cargo") and (ROOT / "benches/query.rs").exists():
        step(R, "rdg_inprocess", lambda: {**sys_rdg.inprocess_bench(work / "replay-state", max(1, int(a.lookup_seconds / 3)),
                                                                     work / "bench.log"), "load": loadavg()})
    else:
        R["rdg_inprocess"] = {"ok": False, "error": "cargo or benches/query.rs not available"}

    # 6. rdg run from tansu: streaming ingest from Kafka
    expected_records = rep["summary"]["events"] + rep["summary"]["dead_letters"]
    brokers = f"127.0.0.1:{a.broker_port}"
    broker = ROOT / "scripts/broker.sh"
    subprocess.run([str(broker), "stop", str(a.broker_port)], capture_output=True)
    run_proc = None
    try:
        subprocess.run([str(broker), "start", str(a.broker_port)], check=True, cwd=ROOT)

        def produce():
            t0 = now()
            if a.input:
                produce_files(brokers, files)
            else:
                rdg.produce_generated(brokers, a.events, a.seed)
            return {"seconds": now() - t0}
        step(R, "produce", produce)

        def run_ingest():
            nonlocal run_proc
            api = f"127.0.0.1:{free_port()}"
            run_proc, res = rdg.run_live(brokers, work / "run-state", api, work / "run.log",
                                         expected_records, total, timeout=max(1800, total / 200))
            res["load"] = loadavg()
            res["url"] = f"http://{api}"
            res["command"] = (f"rdg run --workers {a.workers} --state STATE --brokers {brokers} "
                              f"--status-interval 1 --listen {api}")
            sys_rdg.wait_ready(res["url"])
            run_export = work / "run-export.jsonl"
            rdg.export_url(res["url"], run_export)
            res["export_vs_replay"] = diff_exports(export, run_export, deleted_records(files, defs, blocklist))
            return res
        step(R, "rdg_run", run_ingest)
    finally:
        if run_proc is not None:
            sys_rdg.stop(run_proc)
        subprocess.run([str(broker), "stop", str(a.broker_port)], capture_output=True, cwd=ROOT)

    # 7. identity: rdg's live update on a state of the identity event set
    # (the same events unless --identity-events asks for more), then
    # networkx and igraph recomputing after the same changes.
    id_events = a.identity_events if a.identity_events and not a.input else 0
    if id_events and id_events != a.events:
        id_files = rdg.gen(id_events, a.seed, work / "identity-events")
        id_state = work / "identity-state"

        def id_replay():
            r = rdg.replay(id_files, id_state, count_lines(id_files))
            r["ingest"].pop("points", None)
            return {**r, "load": loadavg(), "events": id_events,
                    "command": f"rdg gen --events {id_events} --seed {a.seed}; rdg replay --workers {a.workers} "
                               f"--state STATE --json playback.jsonl gaming.jsonl login.jsonl"}
        idr = step(R, "identity_replay", id_replay)
        if idr.get("ok") is False:
            raise SystemExit(f"the identity event set could not be replayed: {idr['error']}")
        id_export = work / "identity-export.jsonl"
        rdg.export_state(id_state, id_export)
        id_graph = ev.read_export(id_export)
        id_export.unlink()
    else:
        id_files, id_state, id_graph = files, work / "replay-state", graph
    R["identity_set"] = {"events": id_events or total, "lines": count_lines(id_files),
                         "separate": id_files is not files}
    pairs = identity_pairs(id_graph, a.identity_changes, rng)

    def rdg_identity():
        subprocess.run([str(broker), "start", str(a.broker_port)], check=True, cwd=ROOT, capture_output=True)
        proc = None
        try:
            subprocess.run([str(a.rdg_bin), "produce", "--dataflows", str(dataflows), "--brokers", brokers,
                            "--events", "0", "--partitions", "4"], check=True, capture_output=True)
            api = f"127.0.0.1:{free_port()}"
            proc, url = rdg.start_run(brokers, id_state, api, work / "identity-run.log")
            t0 = now()
            sys_rdg.wait_ready(url, timeout=3600)
            out = {"ready_seconds": now() - t0,
                   "command": f"rdg run --workers {a.workers} --state STATE --brokers {brokers} --listen {api}"}
            st = sys_rdg.Http(url).get_json("/v1/status")
            out["status_counts"] = (st or {}).get("counts")
            ts = max_login_ts(id_files, defs)
            out.update(sys_rdg.identity_update(url, brokers, pairs, ts))
            out["pairs"] = pairs
            out["load"] = loadavg()
            return out
        finally:
            if proc is not None:
                sys_rdg.stop(proc)
            subprocess.run([str(broker), "stop", str(a.broker_port)], capture_output=True, cwd=ROOT)
    step(R, "rdg_identity", rdg_identity)

    links = ev.identity_links(id_files, defs, blocklist)
    hubs = identity.hubs_of(links, settings)
    st = identity.stitched(links, hubs)
    R["identity_input"] = {"links": len(links), "hubs": len(hubs), "stitched_links": len(st),
                           "changes": len(pairs) * 2}
    del links

    def nx_run():
        r = identity.networkx_changes(st, pairs)
        comps = r.pop("components")
        r["partition_vs_rdg"] = identity.partition_check(comps, id_graph.identity)
        r["load"] = loadavg()
        return r
    step(R, "networkx", nx_run)
    step(R, "igraph", lambda: {**identity.igraph_changes(st, pairs), "load": loadavg()})

    # 8. results and report
    R["load_end"] = loadavg()
    R["seconds"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    write_json(work / "results.json", R)
    report.write(R, a.out, a.plots)
    if a.out.resolve() == (ROOT / "BENCHMARKS.md").resolve():
        report.update_readme(R, ROOT / "README.md", "BENCHMARKS.md")
    log(f"wrote {a.out} and plots in {a.plots} (results: {work / 'results.json'})")
    return 0


def ask_t(url, t, edge_schema, s):
    return sys_rdg.neighbour_asker(url, t, edge_schema[t][0])(s)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def diff_exports(a: Path, b: Path, deleted: set) -> dict:
    """Node, edge and identity lines of two exports (dead letters name their
    source, file:line or topic/partition/offset, so they differ by design).
    Differing node and edge records are split by whether a delete event
    retracts them: with several partitions per topic, a delete and the
    other events of the same record are read in another order than in the
    files, so those may differ between a Kafka run and a file replay."""
    def lines(p):
        with open(p) as f:
            return {line for line in f if not line.startswith('{"ns":"dead_letter"')}
    x, y = lines(a), lines(b)
    diff = x ^ y
    records, touched, ident = set(), set(), set()
    for line in diff:
        r = json.loads(line)
        if r["ns"] == "identity":
            ident.add(r["id"])
            continue
        key = (("node", f"{r['type']}:{r['id']}") if r["ns"] == "node"
               else ("edge", (r["type"], r["from"], r["to"])))
        records.add(key)
        if key in deleted:
            touched.add(key)
    return {"equal": x == y, "only_replay": len(x - y), "only_run": len(y - x), "lines": len(x),
            "records": len(records), "records_a_delete_retracts": len(touched), "identity_entries": len(ident)}


def deleted_records(files, defs, blocklist) -> set:
    """Records (("node", key) and ("edge", (type, from, to))) that some
    delete event retracts."""
    out = set()
    for topic, _t, e in ev.read_events(files, defs):
        d = defs.get(topic)
        a = ev.evaluate(d, e, blocklist) if d is not None else None
        if a is not None and a.delete:
            out.update(("node", f"{t}:{i}") for t, i, _ in a.nodes)
            out.update(("edge", (t, f, to)) for t, f, to, _ in a.edges)
    return out


def identity_pairs(graph, n: int, rng) -> list:
    """(account, device) pairs in different clusters, each identifier used
    once: private devices (`devN`) with few links, so no change creates a
    hub."""
    accounts = sorted(k for k, (c, hub) in graph.identity.items() if k.startswith("account:") and not hub)
    devices = sorted(k for k, (c, hub) in graph.identity.items()
                     if k.startswith("device:dev") and not hub and k[len("device:dev"):].isdigit())
    rng.shuffle(accounts)
    rng.shuffle(devices)
    pairs, used = [], set()
    for acc in accounts:
        for dev in devices:
            if dev in used:
                continue
            if graph.identity[acc][0] != graph.identity[dev][0]:
                pairs.append((acc, dev))
                used.add(dev)
                break
        if len(pairs) == n:
            break
    return pairs


def max_login_ts(files, defs) -> int:
    best = 0
    for f in files:
        if ev.topic_of(f) != "login":
            continue
        with open(f, "rb") as fh:
            for line in fh:
                try:
                    e = json.loads(line)
                    if isinstance(e, dict) and isinstance(e.get("ts"), int) and not isinstance(e.get("ts"), bool):
                        best = max(best, e["ts"])
                except ValueError:
                    pass
    if not best:
        raise RuntimeError("no login events: the identity measurement needs the shipped login topic")
    return best


def message_key(line: bytes):
    """The Kafka key of one input line, as `rdg produce` keys generated
    events (one account's events in one partition): `account_id`, else
    `linked_account_id`, else `game_profile_id`; None (any partition) for a
    line without one."""
    try:
        e = json.loads(line)
    except ValueError:
        return None
    if not isinstance(e, dict):
        return None
    for field in ("account_id", "linked_account_id", "game_profile_id"):
        v = e.get(field)
        if isinstance(v, str) and v:
            return v.encode()
    return None


def produce_files(brokers: str, files) -> None:
    """Given JSONL files: every line to its topic (name up to the first dot),
    in file order, keyed by `message_key`, with kafka-python (topics of 4
    partitions created by `rdg produce --events 0`)."""
    from kafka import KafkaProducer
    rdg_bin = sys.argv[sys.argv.index("--rdg-bin") + 1]
    subprocess.run([rdg_bin, "produce", "--dataflows", str(ROOT / "dataflows"), "--brokers", brokers,
                    "--events", "0", "--partitions", "4"], check=True, capture_output=True)
    prod = KafkaProducer(bootstrap_servers=brokers, linger_ms=5, acks=1)
    for f in files:
        topic = ev.topic_of(f)
        with open(f, "rb") as fh:
            for line in fh:
                line = line.rstrip(b"\n")
                prod.send(topic, key=message_key(line), value=line)
    prod.flush()
    prod.close()


if __name__ == "__main__":
    sys.exit(main())
