#!/usr/bin/env python3
"""Gather a sweep's results into one table: ``collect_sweep.py SWEEP``.

Reads ``SWEEP/sweep.json`` (from ``make_sweep.py``) and each point's ``summary.json``;
prints the table (swept values, converged, ``J_h`` and its parts, Newton iterations on the
finest mesh, wall time, restarts) and writes ``SWEEP/sweep_table.json``. Exit status 0 if
every point has a converged result, 1 otherwise (the table is written either way).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def collect(sweep: Path) -> list[dict]:
    """One row per point of the sweep (``status`` says if its summary is missing)."""
    meta = json.loads((sweep / "sweep.json").read_text())
    rows = []
    for pt in meta["points"]:
        row = {"index": pt["index"], **pt["values"]}
        f = Path(pt["out"]) / "summary.json"
        if not f.is_file():
            rows.append({**row, "status": "missing"})
            continue
        s = json.loads(f.read_text())
        c = s["diagnostics"]["cost"]
        ck = s.get("checkpoint") or {}
        rows.append({**row, "status": "converged" if s["converged"] else "failed", "J_h": c["total"],
                     "kinetic": c["kinetic"], "terminal": c["terminal"],
                     "newton": s["newton_iterations_fine"], "wall_s": s["timings"]["total"],
                     "restarts": ck.get("restarts", 0), "ranks": s["ranks"]})
    return rows


def table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v) -> str:
        return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))

    w = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    out = ["  ".join(c.rjust(w[c]) for c in cols)]
    out += ["  ".join(fmt(r.get(c)).rjust(w[c]) for c in cols) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="sweep directory made by make_sweep.py")
    a = p.parse_args(argv)
    sweep = Path(a.sweep)
    if not (sweep / "sweep.json").is_file():
        print(f"collect_sweep.py: error: {sweep}/sweep.json not found (made by make_sweep.py)", file=sys.stderr)
        return 2
    rows = collect(sweep)
    (sweep / "sweep_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    ok = sum(r["status"] == "converged" for r in rows)
    print(f"{ok}/{len(rows)} converged; table in {sweep / 'sweep_table.json'}")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
