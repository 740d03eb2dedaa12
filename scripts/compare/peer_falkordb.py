"""FalkorDB through FalkorDBLite (PyPI `falkordblite`, Python >= 3.12): a
redis-server with the FalkorDB module, started and managed by the Python
package, reached over a local socket.

Streaming ingest: per batch, per type, parameterised `UNWIND $rows AS r
MERGE ...` statements (node records with their props, edge endpoints,
edges with MATCH + MERGE + SET), with an index on `id` of every label
created first. Bulk load: FalkorDBLite has no loader of its own (the
separate falkordb-bulk-loader needs a Redis URL and CSVs of its own format),
so the bulk path is the client's fastest plain write: `UNWIND $rows AS r
CREATE ...` in chunks of 10,000 rows, nodes first, then the id indexes
(waiting until FalkorDB has built them: see wait_for_indexes), then edges.
"""

from __future__ import annotations

import csv
from pathlib import Path

NAME = "FalkorDB"
PACKAGE = "falkordblite"


def q(name: str) -> str:
    return f"`{name}`"


class Falkor:
    def __init__(self, path: Path, node_schema: dict, edge_schema: dict):
        from redislite.falkordb_client import FalkorDB
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = FalkorDB(str(path))
        self.g = self.db.select_graph("rdg")
        self.node_schema = node_schema
        self.edge_schema = edge_schema

    def version(self) -> str:
        from importlib.metadata import version
        mod = ""
        try:
            for m in self.db.client.execute_command("MODULE", "LIST"):
                if isinstance(m, dict) and m.get("name") == "graph":
                    v = int(m["ver"])
                    mod = f" (FalkorDB module {v // 10000}.{v // 100 % 100}.{v % 100})"
        except Exception as e:  # the version is informative only
            mod = f" (module version unknown: {e})"
        return version("falkordblite") + mod

    def create_schema(self) -> None:
        for t in self.node_schema:
            self.g.query(f"CREATE INDEX FOR (n:{q(t)}) ON (n.id)")
        self.wait_for_indexes()

    def write_batch(self, rows: dict) -> None:
        for t, node_rows in rows["nodes"].items():
            props = self.node_schema[t]
            full = [{**{p: None for p in props}, **r} for r in node_rows]
            create = "".join(f", n.{q(p)} = r.{q(p)}" for p in props)
            match = "".join(f", n.{q(p)} = coalesce(r.{q(p)}, n.{q(p)})" for p in props)
            self.g.query(
                f"UNWIND $rows AS r MERGE (n:{q(t)} {{id: r.id}}) "
                f"ON CREATE SET n.first_seen = r.first, n.last_seen = r.last{create} "
                f"ON MATCH SET n.last_seen = r.last{match}", {"rows": full})
        for t, ids in rows["vertices"].items():
            self.g.query(f"UNWIND $ids AS i MERGE (n:{q(t)} {{id: i}})", {"ids": ids})
        for t, edge_rows in rows["edges"].items():
            f, to, props = self.edge_schema[t]
            full = [{**{p: None for p in props}, **r} for r in edge_rows]
            create = "".join(f", e.{q(p)} = r.{q(p)}" for p in props)
            match = "".join(f", e.{q(p)} = coalesce(r.{q(p)}, e.{q(p)})" for p in props)
            self.g.query(
                f"UNWIND $rows AS r MATCH (a:{q(f)} {{id: r.src}}), (b:{q(to)} {{id: r.dst}}) "
                f"MERGE (a)-[e:{q(t)}]->(b) "
                f"ON CREATE SET e.n = r.n, e.first_seen = r.first, e.last_seen = r.last{create} "
                f"ON MATCH SET e.n = e.n + r.n, e.last_seen = r.last{match}", {"rows": full})

    def bulk_load(self, csv_dir: Path, chunk: int = 10_000) -> None:
        def rows_of(path: Path):
            with open(path, newline="") as f:
                r = csv.reader(f)
                header = next(r)
                for row in r:
                    yield {h: (v if v != "" else None) for h, v in zip(header, row)}

        def chunks(it):
            buf = []
            for x in it:
                buf.append(x)
                if len(buf) == chunk:
                    yield buf
                    buf = []
            if buf:
                yield buf

        for t, props in self.node_schema.items():
            p = csv_dir / f"node-{t}.csv"
            sets = "".join(f", {q(x)}: r.{q(x)}" for x in props)
            for rows in chunks(rows_of(p)):
                for r in rows:
                    r["first_seen"] = int(r["first_seen"]) if r["first_seen"] else None
                    r["last_seen"] = int(r["last_seen"]) if r["last_seen"] else None
                self.g.query(f"UNWIND $rows AS r CREATE (:{q(t)} {{id: r.id, first_seen: r.first_seen, "
                             f"last_seen: r.last_seen{sets}}})", {"rows": rows})
        self.create_schema()
        for t, (f, to, props) in self.edge_schema.items():
            p = csv_dir / f"edge-{t}.csv"
            sets = "".join(f", {q(x)}: r.{q(x)}" for x in props)
            for rows in chunks(rows_of(p)):
                for r in rows:
                    for k in ("n", "first_seen", "last_seen"):
                        r[k] = int(r[k])
                self.g.query(f"UNWIND $rows AS r MATCH (a:{q(f)} {{id: r.from}}), (b:{q(to)} {{id: r.to}}) "
                             f"CREATE (a)-[:{q(t)} {{n: r.n, first_seen: r.first_seen, last_seen: r.last_seen{sets}}}]->(b)",
                             {"rows": rows})

    def wait_for_indexes(self, timeout: float = 3600) -> None:
        """FalkorDB builds an index over existing nodes in the background
        ("UNDER CONSTRUCTION" in `CALL db.indexes()`). Edges written by
        MATCH on `id` during that time came out duplicated here (has_email:
        14,332 edges for 7,166 at 200k events), so the loader waits until
        every index is OPERATIONAL (inside the timed load)."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            rows = self.g.ro_query("CALL db.indexes()").result_set
            pending = [r[0] for r in rows if not any(x == "OPERATIONAL" for x in r if isinstance(x, str))]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"indexes still under construction after {timeout} s: {pending}")
            time.sleep(0.01)

    def neighbours(self, edge_type: str, src: str) -> list[str]:
        f, to, _ = self.edge_schema[edge_type]
        res = self.g.ro_query(f"MATCH (a:{q(f)} {{id: $id}})-[:{q(edge_type)}]->(b:{q(to)}) RETURN b.id", {"id": src})
        return [row[0] for row in res.result_set]

    def prepared_neighbours(self, edge_type: str):
        f, to, _ = self.edge_schema[edge_type]
        query = f"MATCH (a:{q(f)} {{id: $id}})-[:{q(edge_type)}]->(b:{q(to)}) RETURN b.id"
        g = self.g

        def ask(src: str) -> list[str]:
            return [row[0] for row in g.ro_query(query, {"id": src}).result_set]
        return ask

    def counts(self) -> dict:
        def one(query):
            return self.g.ro_query(query).result_set[0][0]
        out = {"vertices": one("MATCH (n) RETURN count(n)"),
               "edges": one("MATCH ()-[e]->() RETURN count(e)"),
               "edges_by_type": {}, "vertices_by_type": {}}
        for t in self.edge_schema:
            out["edges_by_type"][t] = one(f"MATCH ()-[e:{q(t)}]->() RETURN count(e)")
        for t in self.node_schema:
            out["vertices_by_type"][t] = one(f"MATCH (n:{q(t)}) RETURN count(n)")
        return out

    def close(self) -> None:
        try:
            self.db.close()
        except Exception:
            pass


def open_db(path, node_schema, edge_schema):
    return Falkor(path, node_schema, edge_schema)
