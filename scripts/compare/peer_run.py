"""Runs one measurement of one graph database in its own process:

    python peer_run.py SYSTEM TASK SPEC.json OUT.json

SYSTEM is a module `peer_<system>.py` (falkordb, ladybug, kuzu); TASK:
  stream  a fresh database, the batches written one after the other (the time
          of each write, not of reading the batch file, counts), then its
          counts, the sample of neighbour lists and the lookup benchmark;
  bulk    a fresh database loaded from the export's CSV files by its bulk
          path, then its counts and the sample of neighbour lists.
The result (or the error with its traceback) goes to OUT.json; main.py
compares the counts and lists with rdg's export.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events import read_batches  # noqa: E402
from harness import RateSeries, loadavg, now, time_lookups, write_json  # noqa: E402


def main() -> int:
    system, task, spec_path, out_path = sys.argv[1:5]
    spec = json.loads(Path(spec_path).read_text())
    out: dict = {"system": system, "task": task, "load_before": loadavg()}
    db = None
    try:
        mod = importlib.import_module(f"peer_{system}")
        out["name"] = mod.NAME
        node_schema = spec["node_schema"]
        edge_schema = {t: tuple(v) for t, v in spec["edge_schema"].items()}
        work = Path(spec["work"]) / f"{system}-{task}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        db = mod.open_db(work / "db", node_schema, edge_schema)
        out["version"] = db.version()
        if task == "stream":
            db.create_schema()
            series = RateSeries()
            spent = 0.0
            done = 0
            for n, rows in read_batches(Path(spec["batches"])):
                t0 = now()
                db.write_batch(rows)
                spent += now() - t0
                done += n
                series.add(spent, done)
            out["ingest"] = series.summary()
            out["load_after_ingest"] = loadavg()
        elif task == "bulk":
            t0 = now()
            if hasattr(db, "create_schema") and system != "falkordb":
                db.create_schema()
            db.bulk_load(Path(spec["csv_dir"]))
            out["bulk_seconds"] = now() - t0
            out["load_after_bulk"] = loadavg()
        else:
            raise ValueError(f"unknown task {task}")
        out["counts"] = db.counts()
        out["sample"] = [[t, src, db.neighbours(t, src)] for t, src in spec["sample"]]
        if task == "stream":
            ask = db.prepared_neighbours(spec["lookup_edge_type"])
            for key in spec["lookup_keys"][:200]:  # warm up, as for rdg
                ask(key)
            out["lookups"] = time_lookups(ask, spec["lookup_keys"], spec["lookup_seconds"], spec["lookup_max"])
            out["load_after_lookups"] = loadavg()
        out["ok"] = True
    except BaseException as e:  # report, never skip silently
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
    finally:
        if db is not None:
            try:
                db.close()
            except Exception:
                pass
    write_json(Path(out_path), out)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
