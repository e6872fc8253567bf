#!/usr/bin/env python3
"""Fill the ``@VAR@`` placeholders of a job template: ``render_job.py TEMPLATE KEY=VALUE ...``.

Prints the job script (or writes ``-o FILE``). Placeholders without a value: ``NODES``
defaults to 1, ``EXTRA`` and ``REPO`` to empty; any other one missing is an error (exit 2).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DEFAULTS = {"NODES": "1", "EXTRA": "", "REPO": ""}
_PH = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def render(text: str, values: dict[str, str]) -> str:
    """``text`` with every ``@KEY@`` replaced; raises ``KeyError`` naming the missing keys."""
    vals = {**DEFAULTS, **values}
    missing = sorted({k for k in _PH.findall(text) if k not in vals})
    if missing:
        raise KeyError(", ".join(missing))
    return _PH.sub(lambda m: vals[m.group(1)], text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("template")
    p.add_argument("values", nargs="*", metavar="KEY=VALUE")
    p.add_argument("-o", "--output", help="write here (executable) instead of stdout")
    a = p.parse_args(argv)
    vals = {}
    for kv in a.values:
        k, sep, v = kv.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", k):
            print(f"render_job.py: error: expected KEY=VALUE, got {kv!r}", file=sys.stderr)
            return 2
        vals[k] = v
    try:
        text = render(Path(a.template).read_text(), vals)
    except OSError as e:
        print(f"render_job.py: error: {e.strerror}: {a.template}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"render_job.py: error: {a.template}: no value for {e.args[0]} (give KEY=VALUE)", file=sys.stderr)
        return 2
    if a.output:
        Path(a.output).write_text(text)
        Path(a.output).chmod(0o755)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
