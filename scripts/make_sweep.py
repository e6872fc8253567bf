#!/usr/bin/env python3
"""Make the configurations of a parameter sweep from a base TOML configuration.

    make_sweep.py BASE.toml --set model.nu=0.05,0.1 --set loss.gamma=1,2 --out SWEEP

writes one configuration per point (the Cartesian product of the ``--set`` values, or
``--zip`` to pair them index by index): ``SWEEP/point_NNN.toml``, ``SWEEP/configs.txt``
(one absolute path per line: array index i runs line i+1) and ``SWEEP/sweep.json`` (the
swept keys and each point's values and output directory ``SWEEP/point_NNN``), and prints
the ``--array`` range for ``job_templates/sweep_array.sbatch``. Keys are ``section.key``
or ``classes[k].key``; values are TOML scalars (numbers, true/false, strings). Every
configuration is validated before anything is written; relative file paths of the base
configuration are made absolute.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_value(s: str):
    """A TOML scalar from the command line: int, float, bool or string."""
    low = s.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s.strip().strip('"')


def set_key(doc: dict, key: str, value) -> None:
    """``doc[section][key] = value`` for ``section.key`` or ``classes[k].key``."""
    m = re.fullmatch(r"([A-Za-z_]+)(?:\[(\d+)\])?\.([A-Za-z_]+)", key)
    if not m:
        raise ValueError(f"--set {key}: expected section.key or classes[k].key")
    sec, idx, name = m.group(1), m.group(2), m.group(3)
    if idx is not None:
        lst = doc.get(sec)
        if not isinstance(lst, list) or int(idx) >= len(lst):
            raise ValueError(f"--set {key}: the base configuration has no {sec}[{idx}]")
        lst[int(idx)][name] = value
    else:
        doc.setdefault(sec, {})[name] = value


def _absolute_paths(node, base: Path):
    if isinstance(node, dict):
        return {k: _absolute_paths(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_paths(v, base) for v in node]
    if isinstance(node, str) and not Path(node).is_absolute() and (base / node).is_file():
        return str((base / node).resolve())
    return node


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: dict) -> str:
    """TOML text of a configuration document (tables, arrays of tables, scalars, lists)."""
    lines = []
    for sec, body in doc.items():
        if isinstance(body, list) and body and all(isinstance(x, dict) for x in body):
            for item in body:
                lines.append(f"[[{sec}]]")
                lines += [f"{k} = {_scalar(v)}" for k, v in item.items()]
                lines.append("")
        elif isinstance(body, dict):
            lines.append(f"[{sec}]")
            lines += [f"{k} = {_scalar(v)}" for k, v in body.items()]
            lines.append("")
        else:
            lines.insert(0, f"{sec} = {_scalar(body)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="base TOML configuration")
    p.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2,...", dest="sets",
                   help="a key and its values (repeatable)")
    p.add_argument("--zip", action="store_true", help="pair the value lists index by index (default: all combinations)")
    p.add_argument("--out", required=True, help="sweep directory")
    a = p.parse_args(argv)
    from mfc_hpc.config import ConfigError, config_from_dict

    def fail(msg: str) -> int:
        print(f"make_sweep.py: error: {msg}", file=sys.stderr)
        return 2

    base = Path(a.base)
    try:
        doc0 = _absolute_paths(tomllib.loads(base.read_text()), base.resolve().parent)
    except OSError as e:
        return fail(f"{a.base}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        return fail(f"{a.base}: not valid TOML: {e}")
    if not a.sets:
        return fail("give at least one --set KEY=V1,V2,...")
    keys, lists = [], []
    for s in a.sets:
        k, sep, vs = s.partition("=")
        if not sep or not vs:
            return fail(f"--set {s}: expected KEY=V1,V2,...")
        keys.append(k.strip())
        lists.append([parse_value(v) for v in vs.split(",")])
    if a.zip and len({len(v) for v in lists}) != 1:
        return fail("--zip: every --set needs the same number of values")
    combos = list(zip(*lists)) if a.zip else list(itertools.product(*lists))
    out = Path(a.out).resolve()
    points, texts = [], []
    for i, vals in enumerate(combos):
        doc = json.loads(json.dumps(doc0))
        try:
            for k, v in zip(keys, vals):
                set_key(doc, k, v)
            config_from_dict(doc, base.resolve().parent)
        except (ValueError, ConfigError) as e:
            return fail(f"point {i} ({', '.join(f'{k}={v}' for k, v in zip(keys, vals))}): {e}")
        texts.append(to_toml(doc))
        points.append({"index": i, "config": str(out / f"point_{i:03d}.toml"),
                       "out": str(out / f"point_{i:03d}"), "values": dict(zip(keys, vals))})
    out.mkdir(parents=True, exist_ok=True)
    for pt, text in zip(points, texts):
        Path(pt["config"]).write_text(f"# sweep point {pt['index']}: {pt['values']} (base {base})\n" + text)
    (out / "configs.txt").write_text("".join(pt["config"] + "\n" for pt in points))
    (out / "sweep.json").write_text(json.dumps({"base": str(base.resolve()), "keys": keys, "points": points},
                                               indent=2) + "\n")
    print(f"{len(points)} points in {out}: sbatch with ARRAY=0-{len(points) - 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
