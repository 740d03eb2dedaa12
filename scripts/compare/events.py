"""The events and what they assert, for the peers.

rdg turns events into records through the definitions in `dataflows/*.toml`.
The peers (graph databases) are given the same events, mapped to the same
records by the same rules (source `when`, rule `when`, id fields, props), in
event order, in batches of 1,000 events:

* a node rule that applies asserts the node record `type:id` with its props;
* an edge rule that applies asserts both endpoints (as vertices) and the edge
  `(type, from, to)` with its props.

Which records exist at the end is rdg's export (`docs/semantics.md`): rdg
also applies deletes, retention, lateness and identity, which the databases
have no equivalent of. So each peer receives, in event order, every
assertion of a record that is live in rdg's export, and no delete: its final
graph must then equal the export exactly (vertices = node records plus edge
endpoints; edges = live edges), which the correctness check verifies. The
peers do a subset of rdg's work per event (no deletes, no retention, no
identity); the rates below count the same input events for every system.

A batch is folded on the client before it is written: one row per vertex and
per edge (count = assertions in the batch, first/last time, the latest
props), grouped by type, as rdg's fold does per time.
"""

from __future__ import annotations

import heapq
import json
import os
import pickle
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

MISSING = object()


def get_path(event: dict, path: str) -> Any:
    """The value at a dotted field path, or MISSING."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def json_equal(a: Any, b: Any) -> bool:
    # JSON true is not the number 1 (Python says it is).
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def holds(cond: dict | None, event: dict) -> bool:
    """A definition's condition (docs/definitions.md, "Conditions")."""
    if cond is None:
        return True
    if "not" in cond:
        return not holds(cond["not"], event)
    if "all" in cond:
        return all(holds(c, event) for c in cond["all"])
    if "any" in cond:
        return any(holds(c, event) for c in cond["any"])
    value = get_path(event, cond["field"])
    if "exists" in cond:
        present = value is not MISSING and value is not None
        return present == cond["exists"]
    if value is MISSING:
        return False
    if "equals" in cond:
        return json_equal(value, cond["equals"])
    if "in" in cond:
        return any(json_equal(value, v) for v in cond["in"])
    raise ValueError(f"unknown condition {cond}")


class DeadLetter(Exception):
    pass


def id_of(event: dict, path: str) -> str | None:
    """An id field: strings as they are, integers in decimal, missing/null =
    None; any other type makes the event a dead letter."""
    value = get_path(event, path)
    if value is MISSING or value is None:
        return None
    if isinstance(value, bool):
        raise DeadLetter(f"id {path} is a boolean")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise DeadLetter(f"id {path} has type {type(value).__name__}")


def event_time(event: dict, spec: Any) -> int:
    """Event time in epoch ms (docs/definitions.md `event_time`)."""
    if isinstance(spec, str):
        path, unit = spec, "ms"
    else:
        path, unit = spec["field"], spec.get("unit", "ms")
    value = get_path(event, path)
    if isinstance(value, bool) or value is MISSING or value is None:
        raise DeadLetter("no event time")
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError as e:
            raise DeadLetter(f"bad time {value!r}") from e
    if isinstance(value, (int, float)):
        scale = {"s": 1000, "ms": 1, "us": 0.001}[unit]
        return int(value * scale // 1)
    raise DeadLetter("bad time type")


def props_of(event: dict, mapping: dict | None) -> dict:
    out = {}
    for name, path in (mapping or {}).items():
        value = get_path(event, path)
        if value is not MISSING and value is not None:
            out[name] = value
    return out


@dataclass
class Definition:
    name: str
    topic: str
    event_time: Any
    when: dict | None
    delete: dict | None
    nodes: list = field(default_factory=list)
    edges: list = field(default_factory=list)
    identity: list = field(default_factory=list)


def load_definitions(folder: Path) -> dict[str, Definition]:
    """Definitions by topic."""
    out = {}
    for path in sorted(folder.glob("*.toml")):
        if path.name == "rdg.toml":
            continue
        d = tomllib.loads(path.read_text())
        src = d["source"]
        out[src["topic"]] = Definition(
            name=path.stem,
            topic=src["topic"],
            event_time=src["event_time"],
            when=src.get("when"),
            delete=src.get("delete"),
            nodes=d.get("nodes", []),
            edges=d.get("edges", []),
            identity=d.get("identity", []),
        )
    return out


def load_settings(folder: Path) -> dict:
    path = folder / "rdg.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def schema(defs: dict[str, Definition]) -> tuple[dict, dict]:
    """Node types with their prop names, and edge types with (from type,
    to type, prop names): the tables a typed database needs."""
    nodes: dict[str, set] = {}
    edges: dict[str, tuple] = {}
    for d in defs.values():
        for n in d.nodes:
            nodes.setdefault(n["type"], set()).update((n.get("props") or {}).keys())
        for e in d.edges:
            nodes.setdefault(e["from"]["type"], set())
            nodes.setdefault(e["to"]["type"], set())
            f, t, props = edges.get(e["type"], (e["from"]["type"], e["to"]["type"], set()))
            props.update((e.get("props") or {}).keys())
            edges[e["type"]] = (f, t, props)
    return (
        {t: sorted(p) for t, p in sorted(nodes.items())},
        {t: (f, to, sorted(p)) for t, (f, to, p) in sorted(edges.items())},
    )


@dataclass
class Assertions:
    """What one event asserts (nothing when ignored or a dead letter)."""
    time: int = 0
    delete: bool = False
    nodes: list = field(default_factory=list)  # (type, id, props)
    edges: list = field(default_factory=list)  # (type, from_key, to_key, props)
    links: list = field(default_factory=list)  # (key_a, key_b), a < b


def evaluate(d: Definition, event: Any, blocklist: set) -> Assertions | None:
    """The records an event asserts (or retracts), None if it asserts
    nothing (ignored by the source `when`, or a dead letter)."""
    if not isinstance(event, dict) or not holds(d.when, event):
        return None
    try:
        out = Assertions(time=event_time(event, d.event_time), delete=holds(d.delete, event))
        for n in d.nodes:
            if holds(n.get("when"), event):
                i = id_of(event, n["id"])
                if i is not None:
                    out.nodes.append((n["type"], i, props_of(event, n.get("props"))))
        for e in d.edges:
            if holds(e.get("when"), event):
                a = id_of(event, e["from"]["id"])
                b = id_of(event, e["to"]["id"])
                if a is not None and b is not None:
                    out.edges.append((e["type"], f"{e['from']['type']}:{a}",
                                      f"{e['to']['type']}:{b}", props_of(event, e.get("props"))))
        for rule in d.identity:
            if holds(rule.get("when"), event):
                keys = set()
                for spec in rule["ids"]:
                    i = id_of(event, spec["id"])
                    if i is not None and i not in blocklist:
                        keys.add(f"{spec['type']}:{i}")
                keys = sorted(keys)
                out.links.extend((a, b) for x, a in enumerate(keys) for b in keys[x + 1:])
        return out
    except DeadLetter:
        return None


def topic_of(path: Path) -> str:
    """rdg replay's rule: a file's topic is its name up to the first dot."""
    return path.name.split(".", 1)[0]


def read_events(files: list[Path], defs: dict[str, Definition]) -> Iterator[tuple[str, int, Any]]:
    """Every line of every file as (topic, time for ordering, parsed event or
    None), all files merged by event time (the order the generator made them
    in, up to its jitter). Lines without a readable time sort where they
    are read."""
    def one(path: Path):
        topic = topic_of(path)
        d = defs.get(topic)
        last = 0
        with open(path, "rb") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    ev = None
                t = last
                if d is not None and isinstance(ev, dict):
                    try:
                        t = event_time(ev, d.event_time)
                    except DeadLetter:
                        pass
                last = max(last, t)
                # Merge on the running max so each file stays in its order.
                yield (last, topic, ev)
    for last, topic, ev in heapq.merge(*(one(p) for p in files), key=lambda x: x[0]):
        yield topic, last, ev


@dataclass
class Graph:
    """rdg's export as a graph: vertices (node records and edge endpoints) and
    live edges."""
    node_records: set = field(default_factory=set)   # "type:id"
    vertices: set = field(default_factory=set)       # "type:id"
    edges: set = field(default_factory=set)          # (type, from, to)
    identity: dict = field(default_factory=dict)     # "type:id" -> (cluster, hub)

    def neighbours(self) -> dict:
        """(edge type, from) -> sorted list of `to` ids."""
        out: dict = {}
        for t, a, b in self.edges:
            out.setdefault((t, a), []).append(b)
        for v in out.values():
            v.sort()
        return out


def read_export(path: Path) -> Graph:
    g = Graph()
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            ns = r["ns"]
            if ns == "node":
                key = f"{r['type']}:{r['id']}"
                g.node_records.add(key)
                g.vertices.add(key)
            elif ns == "edge":
                g.edges.add((r["type"], r["from"], r["to"]))
                g.vertices.add(r["from"])
                g.vertices.add(r["to"])
            elif ns == "identity":
                g.identity[r["id"]] = (r["cluster"], r["hub"])
    return g


def split_key(key: str) -> tuple[str, str]:
    t, i = key.split(":", 1)
    return t, i


def fold_batch(assertions: list[Assertions], live: Graph) -> dict:
    """One batch's rows for the databases, restricted to records live in the
    export: {"nodes": {type: [row]}, "vertices": {type: [id]}, "edges":
    {type: [row]}}. Node rows: {id, first, last, ...props}; edge rows:
    {src, dst, n, first, last, ...props}; props as strings (JSON text of
    non-string values), so every database gets the same typed columns."""
    nodes: dict = {}
    edges: dict = {}
    vertices: dict = {}
    for a in assertions:
        if a.delete:
            continue
        for t, i, props in a.nodes:
            key = f"{t}:{i}"
            if key not in live.node_records:
                continue
            row = nodes.setdefault(t, {}).get(i)
            if row is None:
                row = nodes[t][i] = {"id": i, "first": a.time, "last": a.time}
            row["first"] = min(row["first"], a.time)
            if a.time >= row["last"]:
                row["last"] = a.time
                row.update({k: as_text(v) for k, v in props.items()})
        for t, src, dst, props in a.edges:
            if (t, src, dst) not in live.edges:
                continue
            for key in (src, dst):
                vt, vi = split_key(key)
                vertices.setdefault(vt, set()).add(vi)
            s, d = split_key(src)[1], split_key(dst)[1]
            row = edges.setdefault(t, {}).get((s, d))
            if row is None:
                row = edges[t][(s, d)] = {"src": s, "dst": d, "n": 0, "first": a.time, "last": a.time}
            row["n"] += 1
            row["first"] = min(row["first"], a.time)
            if a.time >= row["last"]:
                row["last"] = a.time
                row.update({k: as_text(v) for k, v in props.items()})
    return {
        "nodes": {t: list(rows.values()) for t, rows in nodes.items()},
        "vertices": {t: sorted(ids) for t, ids in vertices.items()},
        "edges": {t: list(rows.values()) for t, rows in edges.items()},
    }


def as_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def write_batches(files: list[Path], defs: dict, blocklist: set, live: Graph,
                  out: Path, batch: int = 1000) -> dict:
    """Writes the folded batches (pickles, one after the other) to `out`;
    returns {"events": lines read, "batches": n}."""
    n_events = 0
    n_batches = 0
    pending: list = []
    count = 0
    with open(out, "wb") as f:
        def flush():
            nonlocal pending, count, n_batches
            pickle.dump((count, fold_batch(pending, live)), f, protocol=pickle.HIGHEST_PROTOCOL)
            n_batches += 1
            pending, count = [], 0
        for topic, _t, ev in read_events(files, defs):
            n_events += 1
            count += 1
            d = defs.get(topic)
            a = evaluate(d, ev, blocklist) if d is not None else None
            if a is not None:
                pending.append(a)
            if count == batch:
                flush()
        if count:
            flush()
    return {"events": n_events, "batches": n_batches}


def read_batches(path: Path) -> Iterator[tuple[int, dict]]:
    """(events in the batch, folded rows), in order."""
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def identity_links(files: list[Path], defs: dict, blocklist: set) -> set:
    """The live identity links at the end, by the sequential model restricted
    to what the shipped data exercises: a link asserted by a dataflow lives
    until a delete event of that dataflow retracts it (retention is ignored:
    identity retention is 365 days, beyond any generated set). Keys are
    (a, b) with a < b."""
    contrib: dict = {}  # (a, b) -> set of dataflow names contributing
    for topic, _t, ev in read_events(files, defs):
        d = defs.get(topic)
        if d is None:
            continue
        a = evaluate(d, ev, blocklist)
        if a is None:
            continue
        for link in a.links:
            if a.delete:
                s = contrib.get(link)
                if s is not None:
                    s.discard(d.name)
                    if not s:
                        del contrib[link]
            else:
                contrib.setdefault(link, set()).add(d.name)
    return set(contrib)


def blocklist_of(folder: Path) -> set:
    return set(load_settings(folder).get("identity", {}).get("blocklist", []))


if __name__ == "__main__":  # a quick look: python events.py DATAFLOWS FILE...
    import sys
    defs = load_definitions(Path(sys.argv[1]))
    print(schema(defs))
    n = sum(1 for _ in read_events([Path(p) for p in sys.argv[2:]], defs))
    print(n, "lines", os.getpid())
