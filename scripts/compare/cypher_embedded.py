"""The Kuzu family of embedded graph databases (Kuzu, and LadybugDB, Kuzu's
fork with the same API): typed node and rel tables, parameterised MERGE per
batch, COPY for bulk loads.

A batch is written in one explicit transaction, as three kinds of
statements per type: node records (MERGE + SET props), edge endpoints
(MERGE vertex), edges (MERGE both endpoints by primary key, which only finds
them since the statements before created them, then MERGE the rel and SET
its aggregate). Issue 11 found that one `UNWIND ... MERGE (a)-[r]->(b) SET
r...` statement creating the endpoints and the edges at once, with repeated
edges in a batch, loses and garbles edges in both; here endpoints exist
before the edge statement and a batch holds each edge once (folded), and the
final graph is checked against rdg's export every run.

`MATCH (a:T {id: r.src}), (b:U {id: r.dst})` instead of the two MERGEs is
planned as a join that scans a node table per batch: 4-5 times slower at
200k events here (398 vs 87 ms for one batch's 527 used_device edges), and
slower as the tables grow.
"""

from __future__ import annotations

import csv
from pathlib import Path


def q(name: str) -> str:
    """Quoted identifier (`profile` is a keyword in Cypher)."""
    return f"`{name}`"


class KuzuFamily:
    def __init__(self, module, path: Path, node_schema: dict, edge_schema: dict):
        self.m = module
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = module.Database(str(path))
        self.conn = module.Connection(self.db)
        self.node_schema = node_schema  # type -> [prop]
        self.edge_schema = edge_schema  # type -> (from, to, [prop])
        self._node_q = {}
        self._vertex_q = {}
        self._edge_q = {}

    def version(self) -> str:
        return self.m.__version__

    def create_schema(self) -> None:
        for t, props in self.node_schema.items():
            cols = "".join(f", {q(p)} STRING" for p in props)
            self.conn.execute(f"CREATE NODE TABLE {q(t)}(id STRING, first_seen INT64, last_seen INT64{cols}, PRIMARY KEY(id))")
        for t, (f, to, props) in self.edge_schema.items():
            cols = "".join(f", {q(p)} STRING" for p in props)
            self.conn.execute(f"CREATE REL TABLE {q(t)}(FROM {q(f)} TO {q(to)}, n INT64, first_seen INT64, last_seen INT64{cols})")

    # --- streaming ingest -------------------------------------------------
    def node_query(self, t: str) -> str:
        if t not in self._node_q:
            props = self.node_schema[t]
            create = "".join(f", n.{q(p)} = r.{q(p)}" for p in props)
            match = "".join(f", n.{q(p)} = coalesce(r.{q(p)}, n.{q(p)})" for p in props)
            self._node_q[t] = (
                f"UNWIND $rows AS r MERGE (n:{q(t)} {{id: r.id}}) "
                f"ON CREATE SET n.first_seen = r.first, n.last_seen = r.last{create} "
                f"ON MATCH SET n.last_seen = r.last{match}")
        return self._node_q[t]

    def vertex_query(self, t: str) -> str:
        if t not in self._vertex_q:
            self._vertex_q[t] = f"UNWIND $ids AS i MERGE (n:{q(t)} {{id: i}})"
        return self._vertex_q[t]

    def edge_query(self, t: str) -> str:
        if t not in self._edge_q:
            f, to, props = self.edge_schema[t]
            create = "".join(f", e.{q(p)} = r.{q(p)}" for p in props)
            match = "".join(f", e.{q(p)} = coalesce(r.{q(p)}, e.{q(p)})" for p in props)
            self._edge_q[t] = (
                f"UNWIND $rows AS r MERGE (a:{q(f)} {{id: r.src}}) MERGE (b:{q(to)} {{id: r.dst}}) "
                f"MERGE (a)-[e:{q(t)}]->(b) "
                f"ON CREATE SET e.n = r.n, e.first_seen = r.first, e.last_seen = r.last{create} "
                f"ON MATCH SET e.n = e.n + r.n, e.last_seen = r.last{match}")
        return self._edge_q[t]

    def write_batch(self, rows: dict) -> None:
        c = self.conn
        c.execute("BEGIN TRANSACTION")
        try:
            for t, node_rows in rows["nodes"].items():
                props = self.node_schema[t]
                full = [{**{p: None for p in props}, **r} for r in node_rows]
                c.execute(self.node_query(t), {"rows": full})
            for t, ids in rows["vertices"].items():
                c.execute(self.vertex_query(t), {"ids": ids})
            for t, edge_rows in rows["edges"].items():
                props = self.edge_schema[t][2]
                full = [{**{p: None for p in props}, **r} for r in edge_rows]
                c.execute(self.edge_query(t), {"rows": full})
            c.execute("COMMIT")
        except Exception:
            c.execute("ROLLBACK")
            raise

    # --- bulk load ----------------------------------------------------------
    def bulk_load(self, csv_dir: Path) -> None:
        """COPY every node table, then every rel table, from the CSV files
        written by `graph_csv` (header row; empty field = null)."""
        for t in self.node_schema:
            p = csv_dir / f"node-{t}.csv"
            if p.exists():
                self.conn.execute(f"COPY {q(t)} FROM '{p}' (HEADER=true)")
        for t in self.edge_schema:
            p = csv_dir / f"edge-{t}.csv"
            if p.exists():
                self.conn.execute(f"COPY {q(t)} FROM '{p}' (HEADER=true)")

    # --- reads ----------------------------------------------------------------
    def neighbour_query(self, edge_type: str) -> str:
        f, to, _ = self.edge_schema[edge_type]
        return f"MATCH (a:{q(f)} {{id: $id}})-[:{q(edge_type)}]->(b:{q(to)}) RETURN b.id"

    def neighbours(self, edge_type: str, src: str) -> list[str]:
        res = self.conn.execute(self.neighbour_query(edge_type), {"id": src})
        return [row[0] for row in res.get_all()]

    def prepared_neighbours(self, edge_type: str):
        """A function id -> neighbour ids, with the query prepared once (the
        client's fastest documented path)."""
        stmt = self.conn.prepare(self.neighbour_query(edge_type))
        conn = self.conn

        def ask(src: str) -> list[str]:
            return [row[0] for row in conn.execute(stmt, {"id": src}).get_all()]
        return ask

    def counts(self) -> dict:
        def one(query):
            return self.conn.execute(query).get_all()[0][0]
        out = {"vertices": one("MATCH (n) RETURN count(n)"),
               "edges": one("MATCH ()-[e]->() RETURN count(e)"),
               "edges_by_type": {}, "vertices_by_type": {}}
        for t in self.edge_schema:
            out["edges_by_type"][t] = one(f"MATCH ()-[e:{q(t)}]->() RETURN count(e)")
        for t in self.node_schema:
            out["vertices_by_type"][t] = one(f"MATCH (n:{q(t)}) RETURN count(n)")
        return out

    def close(self) -> None:
        self.conn.close()
        self.db.close()


def graph_csv(export_path: Path, node_schema: dict, edge_schema: dict, out: Path) -> dict:
    """The export as CSV files for a bulk loader: node-T.csv (id, first_seen,
    last_seen, props...; edge endpoints without a node record get a row with
    empty fields) and edge-T.csv (from, to, n, first_seen, last_seen,
    props...). Returns the rows written per file."""
    import json
    out.mkdir(parents=True, exist_ok=True)
    nodes: dict = {t: {} for t in node_schema}
    edges: dict = {t: [] for t in edge_schema}
    with open(export_path) as f:
        for line in f:
            r = json.loads(line)
            if r["ns"] == "node":
                nodes.setdefault(r["type"], {})[r["id"]] = r
            elif r["ns"] == "edge":
                edges[r["type"]].append(r)
                for key in (r["from"], r["to"]):
                    t, i = key.split(":", 1)
                    nodes.setdefault(t, {}).setdefault(i, None)

    def text(v):
        if v is None:
            return ""
        return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    written = {}
    for t, props in node_schema.items():
        with open(out / f"node-{t}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "first_seen", "last_seen", *props])
            for i, r in nodes.get(t, {}).items():
                if r is None:
                    w.writerow([i, "", "", *["" for _ in props]])
                else:
                    w.writerow([i, r["first_seen"], r["last_seen"], *[text(r["props"].get(p)) for p in props]])
            written[f"node-{t}"] = len(nodes.get(t, {}))
    for t, (_f, _to, props) in edge_schema.items():
        with open(out / f"edge-{t}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["from", "to", "n", "first_seen", "last_seen", *props])
            for r in edges[t]:
                w.writerow([r["from"].split(":", 1)[1], r["to"].split(":", 1)[1], r["count"],
                            r["first_seen"], r["last_seen"], *[text(r["props"].get(p)) for p in props]])
            written[f"edge-{t}"] = len(edges[t])
    return written
