"""The corpus of bad inputs: a generator, the routes that feed each case to the package,
and a runner that executes cases in a child process with a time limit.

Every case is a :class:`Case`: an id, a category (``config``, ``data``, ``checkpoint``,
``solution``, ``petsc``, ``output``, ``cli``), a *route* and what must come back: the exit
status (2 unless documented otherwise), a regular expression the one-line message must
match (it names the key, file, option or directory), and, for corruptions that may hit
bytes nobody reads, ``may_pass`` (accepted only if what is read is identical to the good
file). The routes:

* ``solve-inputs``: the input boundary of ``mfc-hpc solve`` in process,
  :func:`mfc_hpc.jobs.inputs.check_solve_inputs` on ``COMM_SELF`` (configuration,
  PETSc options, data and samples files, output directories, locks);
* ``petsc``: PETSc options set in the options database, then the checks of
  ``check_user_options`` and the construction of a solver (its ``setFromOptions``);
* ``checkpoint``: :func:`mfc_hpc.fileio.checkpoint.probe` then ``verify`` (what
  ``inspect`` and ``--restart`` do before any solve);
* ``solution``: :func:`mfc_hpc.fileio.solution.read_solution`;
* ``cli``: the real command line, ``mpiexec -n P python -m mfc_hpc ...`` (run by the test,
  not by the runner).

:func:`make_corpus` writes the good fixtures and every case's files into a directory and
returns the cases; ``python tests/bad_inputs.py run CASES.json RESULTS.jsonl`` executes
the in-process ones (one JSON line when a case starts and one when it ends, so a hang is
attributed to its case); ``python tests/bad_inputs.py make DIR`` writes a corpus and
prints a summary.

Extending it to another command (``train``, ``predict``, ...): add a route (a function
``route_NAME(case, fix)`` that feeds ``case.args`` to the command's input boundary and
lets its BadInput/OutputError propagate) to :data:`ROUTES`, and a family (a function
decorated with :func:`family` that yields :class:`Case` objects) for its inputs; CLI
cases of the command are ``Case(route="cli", args=["train", ...])``. The test module picks
every family up.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """One bad input and what must come of it."""

    id: str
    category: str
    route: str
    args: dict | list = field(default_factory=dict)
    code: int = 2
    needle: str = ""
    may_pass: bool = False
    same_as: str | None = None  # with may_pass: the good file whose content an accepted one must have
    ranks: int = 1
    timeout: float = 30.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


FAMILIES: list[Callable[["Fixtures"], Iterator[Case]]] = []


def family(fn: Callable[["Fixtures"], Iterator[Case]]) -> Callable[["Fixtures"], Iterator[Case]]:
    """Register a generator of cases."""
    FAMILIES.append(fn)
    return fn


# ---------------------------------------------------------------------------- fixtures

GOOD = {
    "mesh": {"x_min": -3.0, "x_max": 3.0, "nodes": 17, "layers": 4, "depth": 1.0},
    "model": {"nu": 0.1},
    "classes": [{"mean": -0.5, "var": 0.25}],
    "loss": {"kind": "quadratic", "alpha": 1.0, "target": 0.5},
}
TWO = {
    "mesh": {"x_min": -4.0, "x_max": 4.0, "nodes": 17, "layers": 4},
    "model": {"nu": 0.1, "eta": 0.1},
    "classes": [{"prior": 0.5, "mean": -0.5, "var": 0.09}, {"prior": 0.5, "mean": 0.5, "var": 0.09}],
    "loss": {"kind": "softmax", "weights": [-1.0, 1.0], "biases": [0.0, 0.0], "gamma": 1.0},
}
DATA = {
    "mesh": {"x_min": -4.0, "x_max": 4.0, "nodes": 17, "layers": 4},
    "model": {"nu": 0.1, "eta": 0.1},
    "data": {"file": "good.csv", "label": "cls", "projection": "none", "columns": ["f1"], "test_fraction": 0.3},
}


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(raw: dict) -> str:
    """A configuration dict as TOML (sections, arrays of tables; nested tables inline)."""
    out = []
    for sec, body in raw.items():
        if isinstance(body, list) and body and all(isinstance(b, dict) for b in body):
            for b in body:
                out.append(f"[[{sec}]]")
                out += [f"{k} = {toml_value(v)}" for k, v in b.items()]
        elif isinstance(body, dict):
            out.append(f"[{sec}]")
            out += [f"{k} = {toml_value(v)}" for k, v in body.items()]
        else:
            out.insert(0, f"{sec} = {toml_value(body)}")
    return "\n".join(out) + "\n"


def digest_tree(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or directories)."""
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            try:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError:
                out[str(f)] = "unreadable"
    return out


@dataclass
class Fixtures:
    """The good files the cases are made from (and that no case may change)."""

    root: Path
    good_toml: Path
    results: Path  # an output directory holding a previous run's results
    checkpoint: Path  # a good checkpoint (with its sidecar)
    solution: Path  # a good solution.h5 (with its sidecar)
    csv: Path
    samples: Path
    protected: list[Path]
    n: int = 0

    def path(self, name: str) -> Path:
        """A fresh file or directory name for one case."""
        self.n += 1
        d = self.root / "cases" / f"{self.n:04d}"
        d.mkdir(parents=True, exist_ok=True)
        return d / name

    def to_json(self) -> dict:
        return {"root": str(self.root), "good_toml": str(self.good_toml), "results": str(self.results),
                "checkpoint": str(self.checkpoint), "solution": str(self.solution), "csv": str(self.csv),
                "samples": str(self.samples), "protected": [str(p) for p in self.protected]}

    def config(self, raw: dict | str, name: str = "c.toml") -> Path:
        p = self.path(name)
        p.write_text(raw if isinstance(raw, str) else to_toml(raw))
        return p


def make_fixtures(root: Path) -> Fixtures:
    """The good fixtures: configurations, a data table, a samples file, and a real solve's
    checkpoint and solution (in process, on ``COMM_SELF``)."""
    import numpy as np
    from petsc4py import PETSc

    from mfc_hpc.config import config_from_dict
    from mfc_hpc.fileio.restart import Checkpointer
    from mfc_hpc.jobs.solve import solve

    root.mkdir(parents=True, exist_ok=True)
    good = root / "good"
    good.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-0.8, 0.4, 40), rng.normal(0.8, 0.4, 40)])
    lab = ["a"] * 40 + ["b"] * 40
    csv = good / "good.csv"
    csv.write_text("f1,f2,cls\n" + "".join(f"{a:.6f},{b:.6f},{c}\n" for a, b, c in
                                            zip(x, rng.normal(size=80), lab)))
    samples = good / "samples.txt"
    samples.write_text("".join(f"{v:.6f}\n" for v in rng.normal(-0.5, 0.5, 60)))
    good_toml = good / "good.toml"
    good_toml.write_text(to_toml(GOOD))
    cfg = config_from_dict(copy.deepcopy(GOOD))
    results = good / "results"
    ck = Checkpointer(PETSc.COMM_SELF, results / "checkpoints")
    res = solve(cfg, PETSc.COMM_SELF, out_dir=results, observers=[ck], verbose=False)
    ck.restore_signals()
    res.ms.destroy()
    from mfc_hpc.fileio.checkpoint import find_checkpoints
    checkpoint = find_checkpoints(results / "checkpoints")[0][1]
    return Fixtures(root=root, good_toml=good_toml, results=results, checkpoint=checkpoint,
                    solution=results / "solution.h5", csv=csv, samples=samples, protected=[good])


def with_(raw: dict, path: tuple, value: Any) -> dict:
    """A deep copy of ``raw`` with ``path`` set to ``value`` (``KeyError``: deleted)."""
    raw = copy.deepcopy(raw)
    d = raw
    for k in path[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return raw


def solve_case(fx: Fixtures, cid: str, category: str, config: Path, needle: str, code: int = 2,
               out: Path | None = None, **kw) -> Case:
    args = {"config": str(config), "out": out if isinstance(out, str) else str(out if out is not None else fx.results)}
    args.update({k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})
    return Case(cid, category, "solve-inputs", args, code, needle)


# ---------------------------------------------------------------------------- configurations

#: (key path, bad value, what the message must say)
CONFIG_MUTATIONS: list[tuple[tuple, Any, str]] = [
    (("mesh", "nodez"), 3, r"mesh\.nodez: unknown key"),
    (("mesh", "nodes"), -4, r"mesh\.nodes: must be an integer >= 3"),
    (("mesh", "nodes"), 2, r"mesh\.nodes: must be an integer >= 3"),
    (("mesh", "nodes"), 3.5, r"mesh\.nodes: must be an integer"),
    (("mesh", "nodes"), "many", r"mesh\.nodes: must be an integer"),
    (("mesh", "nodes"), True, r"mesh\.nodes: must be an integer"),
    (("mesh", "nodes"), 2 ** 31, r"mesh\.nodes: must be an integer <="),
    (("mesh", "nodes"), 2 ** 62, r"mesh\.nodes: must be an integer <="),
    (("mesh", "nodes"), [17, 17, 17], r"mesh"),
    (("mesh", "nodes"), [], r"mesh"),
    (("mesh", "layers"), 0, r"mesh\.layers"),
    (("mesh",), {"nodes": 4097, "layers": 16777216}, r"mesh\.nodes: 4097 nodes and 16777216 layers are .* beyond PETSc's index space"),
    (("mesh",), {"nodes": [65536, 65536], "layers": 4}, r"mesh\.nodes: 65536 x 65536 nodes .* beyond PETSc's index space"),
    (("mesh", "layers"), -1, r"mesh\.layers"),
    (("mesh", "layers"), 2 ** 31, r"mesh\.layers: must be an integer <="),
    (("mesh", "layers"), 1.5, r"mesh\.layers: must be an integer"),
    (("mesh", "x_max"), -5.0, r"mesh\.x_max: must exceed mesh\.x_min"),
    (("mesh", "x_max"), -3.0, r"mesh\.x_max: must exceed mesh\.x_min"),
    (("mesh", "x_min"), float("nan"), r"mesh\.x_min: must be finite"),
    (("mesh", "x_max"), float("inf"), r"mesh\.x_max: must be finite"),
    (("mesh", "x_min"), -1e300, r"mesh\.x_min: must be of magnitude below"),
    (("mesh", "x_max"), 1e300, r"mesh\.x_max: must be of magnitude below"),
    (("mesh", "x_min"), "left", r"mesh\.x_min: must be a number"),
    (("mesh", "depth"), -1.0, r"mesh\.depth: must be > 0"),
    (("mesh", "depth"), 0.0, r"mesh\.depth: must be > 0"),
    (("mesh", "depth"), 1e300, r"mesh\.depth: must be"),
    (("mesh", "depth"), float("nan"), r"mesh\.depth: must be finite"),
    (("mesh",), [1, 2], r"mesh: must be a table"),
    (("model", "nu"), 0.0, r"model\.nu: must be > 0"),
    (("model", "nu"), -0.1, r"model\.nu: must be > 0"),
    (("model", "nu"), 1e300, r"model\.nu: must be"),
    (("model", "nu"), float("inf"), r"model\.nu: must be finite"),
    (("model", "nu"), "0.1", r"model\.nu: must be a number"),
    (("model", "eta"), -0.1, r"model\.eta: must be >= 0"),
    (("model", "eta"), 1e300, r"model\.eta: must be"),
    (("model", "running"), "crowd", r"model\.running: must be one of"),
    (("model", "running"), "congestion", r"model\.kappa: required"),
    (("model", "kappa"), 1e300, r"model\.kappa: must be"),
    (("model", "kappa"), -1.0, r"model\.kappa: must be >= 0"),
    (("model", "floor"), 0.9, r"model\.floor: must be <= 0\.5"),
    (("model", "floor"), -0.1, r"model\.floor: must be >= 0"),
    (("model", "scheme"), "rk4", r"model\.scheme: must be one of"),
    (("model", "gamma"), 1.0, r"model\.gamma: unknown key"),
    (("classes",), [], r"classes: must be a non-empty array"),
    (("classes",), KeyError, r"classes: at least one"),
    (("classes", 0, "var"), -1.0, r"classes\[0\]\.var: must be > 0"),
    (("classes", 0, "var"), 0.0, r"classes\[0\]\.var: must be > 0"),
    (("classes", 0, "var"), [[1.0, 0.0]], r"classes\[0\]\.var"),
    (("classes", 0, "var"), 1e300, r"classes\[0\]\.var: must be of magnitude below"),
    (("classes", 0, "mean"), 1e300, r"classes\[0\]\.mean: must be of magnitude below"),
    (("classes", 0, "mean"), "zero", r"classes\[0\]\.mean: must be a number"),
    (("classes", 0, "mean"), [0.0, 1.0], r"(classes\[0\]\.mean|loss\.target)"),
    (("classes", 0, "mean"), KeyError, r"classes\[0\]: a Gaussian class needs both mean and var"),
    (("classes", 0, "prior"), 0.0, r"classes\[0\]\.prior: must be > 0"),
    (("classes", 0, "prior"), -1.0, r"classes\[0\]\.prior: must be > 0"),
    (("classes", 0, "prior"), 1e300, r"classes\[0\]\.prior: must be"),
    (("classes", 0, "bandwidth"), 0.1, r"classes\[0\]\.bandwidth: only for samples"),
    (("classes", 0, "samples"), "nowhere.csv", r"classes\[0\]: give either mean and var"),
    (("classes", 0, "colour"), "red", r"classes\[0\]\.colour: unknown key"),
    (("classes", 0, "name"), 5, r"classes\[0\]\.name: must be a string"),
    (("loss", "kind"), "hinge", r"loss\.kind: must be one of"),
    (("loss", "kind"), 3, r"loss\.kind: must be a string"),
    (("loss", "gamma"), 2.0, r"loss\.gamma: not a key of the quadratic loss"),
    (("loss", "alpha"), 0.0, r"loss\.alpha: must be > 0"),
    (("loss", "alpha"), 1e300, r"loss\.alpha: must be"),
    (("loss", "target"), 1e300, r"loss\.target: must be of magnitude below"),
    (("loss", "target"), -1e300, r"loss\.target: must be of magnitude below"),
    (("loss", "target"), float("nan"), r"loss\.target: must be finite"),
    (("loss", "target"), [0.0, 1.0], r"loss\.target: needs 1 entry"),
    (("loss", "floor"), 0.1, r"loss\.floor: not a key of the quadratic loss"),
    (("solver",), {"max_it": 0}, r"solver\.max_it: must be an integer >= 1"),
    (("solver",), {"max_it": 10 ** 9}, r"solver\.max_it: must be an integer <="),
    (("solver",), {"rtol": -5.0}, r"solver\.rtol: must be >= 0"),
    (("solver",), {"rtol": 1.0}, r"solver\.rtol: must be < 1"),
    (("solver",), {"rtol": float("nan")}, r"solver\.rtol: must be finite"),
    (("solver",), {"atol": -1.0}, r"solver\.atol: must be >= 0"),
    (("solver",), {"stol": 2.0}, r"solver\.stol: must be < 1"),
    (("solver",), {"process_grid": [2]}, r"solver\.process_grid: must be \[px, py\]"),
    (("solver",), {"process_grid": [2, 1]}, r"solver\.process_grid: 2 x 1 = 2 ranks does not match the 1 rank"),
    (("solver",), {"process_grid": [1, 3]}, r"solver\.process_grid: 1 x 3 = 3 ranks does not match"),
    (("solver",), {"process_grid": [-1, 1]}, r"solver\.process_grid\[0\]: must be an integer >= 0"),
    (("solver",), {"process_grid": [100, 0]}, r"solver\.process_grid\[0\]: 100 ranks for 17 nodes"),
    (("solver",), {"process_grid": "auto"}, r"solver\.process_grid: must be"),
    (("solver",), {"grid_levels": -1}, r"solver\.grid_levels"),
    (("solver",), {"grid_levels": 3}, r"solver\.grid_levels: 3 levels need"),
    (("solver",), {"continuation": "sometimes"}, r"solver\.continuation: must be one of"),
    (("solver",), {"loss_steps": 0}, r"solver\.loss_steps: must be an integer >= 1"),
    (("solver",), {"min_step": 0.0}, r"solver\.min_step: must be > 0"),
    (("solver",), {"max_stages": 0}, r"solver\.max_stages: must be an integer >= 1"),
    (("solver",), {"nu_start": -1.0}, r"solver\.nu_start: must be > 0"),
    (("solver",), {"nu_start": 1e300}, r"solver\.nu_start: must be"),
    (("solver",), {"positivity": 0.0}, r"solver\.positivity: must be > 0"),
    (("solver",), {"positivity": 1.5}, r"solver\.positivity: must be <= 1"),
    (("solver",), {"step_cap": "none"}, r"solver\.step_cap: must be one of"),
    (("solver",), {"guess": "random"}, r"solver\.guess: must be one of"),
    (("solver",), {"guess": "optimisation", "linear": "lu"}, r"solver\.linear: must be one of"),
    (("solver",), {"optimisation_fallback": "yes"}, r"solver\.optimisation_fallback: must be true or false"),
    (("solver",), {"optimisation_maxiter": 0}, r"solver\.optimisation_maxiter: must be an integer >= 1"),
    (("solver",), {"tolerance": 1e-8}, r"solver\.tolerance: unknown key"),
    (("checkpoint",), {"keep": 0}, r"checkpoint\.keep: must be an integer >= 1"),
    (("checkpoint",), {"every_newton": -1}, r"checkpoint\.every_newton: must be an integer >= 0"),
    (("checkpoint",), {"every_minutes": "often"}, r"checkpoint\.every_minutes: must be a number"),
    (("checkpoint",), {"every_minutes": 1e300}, r"checkpoint\.every_minutes: must be"),
    (("checkpoint",), {"at_stage_end": 1}, r"checkpoint\.at_stage_end: must be true or false"),
    (("checkpoint",), {"directory": ""}, r"checkpoint\.directory: must not be empty"),
    (("checkpoint",), {"directory": 5}, r"checkpoint\.directory: must be a string"),
    (("checkpoint",), {"when": 1}, r"checkpoint\.when: unknown key"),
    (("bogus",), {}, r"bogus: unknown section"),
]


@family
def configs(fx: Fixtures) -> Iterator[Case]:
    for path, value, needle in CONFIG_MUTATIONS:
        yield solve_case(fx, f"config/{'.'.join(map(str, path))}={value!r}"[:120], "config",
                         fx.config(with_(GOOD, path, value)), needle)
    two = [
        (("model", "eta"), 0.0, r"model\.eta: must be > 0 with several classes"),
        (("loss", "weights"), [1.0], r"loss\.weights: needs one weight per class \(2\)"),
        (("loss", "weights"), [1.0, 2.0, 3.0], r"loss\.weights: needs one weight per class"),
        (("loss", "weights"), [1e300, 1.0], r"loss\.weights\[0\]: must be of magnitude below"),
        (("loss", "weights"), [1e9, 1.0], r"loss\.weights: entries must be of magnitude below 1e8"),
        (("loss", "weights"), KeyError, r"loss\.weights: required for the softmax loss"),
        (("loss", "biases"), [0.0], r"loss\.biases: needs one bias per class"),
        (("loss", "gamma"), 1e300, r"loss\.gamma: must be"),
        (("loss", "gamma"), 0.0, r"loss\.gamma: must be > 0"),
        (("loss", "gamma"), -1.0, r"loss\.gamma: must be > 0"),
        (("loss", "alpha"), 1.0, r"loss\.alpha: not a key of the softmax loss"),
        (("loss", "kind"), "bridge", r"loss\.(kind|target|biases|weights)"),
        (("classes", 1, "var"), [[0.1, 0.2], [0.2, 0.1]], r"classes\[1\]\.var"),
    ]
    for path, value, needle in two:
        yield solve_case(fx, f"config/two_class/{'.'.join(map(str, path))}={value!r}"[:120], "config",
                         fx.config(with_(TWO, path, value)), needle)
    # the mesh misses the data: the release "converged" to a density of -9
    yield solve_case(fx, "config/mesh_misses_the_gaussian", "config",
                     fx.config(with_(with_(GOOD, ("mesh", "x_min"), 10.0), ("mesh", "x_max"), 20.0)),
                     r"classes\[0\]: 100 % of its mass lies outside the mesh")
    yield solve_case(fx, "config/gaussian_too_wide_for_the_mesh", "config",
                     fx.config(with_(GOOD, ("classes", 0, "var"), 25.0)),
                     r"classes\[0\]: .* % of its mass lies outside the mesh")
    yield solve_case(fx, "config/gaussian_at_the_wall", "config",
                     fx.config(with_(GOOD, ("classes", 0, "mean"), 3.0)),
                     r"classes\[0\]: .* % of its mass lies outside the mesh")
    # files that are not configurations
    texts = {
        "not_toml": "[mesh\nnodes = 3",
        "empty": "",
        "only_comments": "# nothing\n",
        "duplicate_key": "[mesh]\nnodes = 17\nnodes = 33\n[[classes]]\nmean = 0.0\nvar = 1.0\n",
        "duplicate_table": "[mesh]\nnodes = 17\n[mesh]\nlayers = 4\n",
        "top_level_value": "nodes = 17\n[[classes]]\nmean = 0.0\nvar = 1.0\n",
        "array_instead_of_table": "mesh = [1, 2]\n[[classes]]\nmean = 0.0\nvar = 1.0\n",
        "nested_tables_20": "[[classes]]\nmean = 0.0\nvar = 1.0\n[mesh]\nx = " + "{a = " * 20 + "1" + "}" * 20 + "\n",
        "nested_arrays_5000": "[[classes]]\nmean = 0.0\nvar = 1.0\n[mesh]\nnodes = " + "[" * 5000 + "]" * 5000 + "\n",
        "nested_arrays_200000": "x = " + "[" * 200000 + "]" * 200000 + "\n",
        "nested_dotted_keys": "[[classes]]\nmean = 0.0\nvar = 1.0\n[solver]\n" + ".".join(["a"] * 40) + " = 1\n",
        "bad_unicode_escape": '[checkpoint]\ndirectory = "\\uZZZZ"\n',
        "very_long_line": "# " + "x" * 900000 + "\n[[classes]]\nmean = 0.0\nvar = 1.0\n",
        "toml_date": "[mesh]\ndepth = 1979-05-27\n[[classes]]\nmean = 0.0\nvar = 1.0\n",
        "inline_classes_not_array": "classes = {mean = 0.0, var = 1.0}\n",
    }
    needles = {
        "not_toml": r"config: .* is not valid TOML", "empty": r"classes: at least one", "only_comments": r"classes: at least one",
        "duplicate_key": r"not valid TOML", "duplicate_table": r"not valid TOML", "top_level_value": r"nodes: unknown section",
        "array_instead_of_table": r"mesh: must be a table", "nested_tables_20": r"nested deeper than 8 levels",
        "nested_arrays_5000": r"(nests tables or arrays too deeply|nested deeper than 8 levels)",
        "nested_arrays_200000": r"(nests tables or arrays too deeply|nested deeper than 8 levels|not valid TOML)",
        "nested_dotted_keys": r"nested deeper than 8 levels", "bad_unicode_escape": r"not valid TOML",
        "very_long_line": r"classes\[0\]|mesh|loss|config", "toml_date": r"mesh\.depth: must be a number",
        "inline_classes_not_array": r"classes: must be a non-empty array",
    }
    for name, text in texts.items():
        if name == "very_long_line":
            text = "# " + "x" * (1 << 20) + "\n"  # beyond MAX_CONFIG_BYTES
            needles[name] = r"config: .* larger than a configuration can be"
        yield solve_case(fx, f"config/file/{name}", "config", fx.config(text), needles[name])
    p = fx.path("binary.toml")
    p.write_bytes(bytes(range(256)) * 8)
    yield solve_case(fx, "config/file/binary", "config", p, r"config: .* is not (a text file|valid TOML)")
    p = fx.path("latin1.toml")
    p.write_bytes("[mesh]\n# caf\xe9\n".encode("latin-1"))
    yield solve_case(fx, "config/file/latin1", "config", p, r"config: .* is not a text file")
    yield solve_case(fx, "config/file/missing", "config", fx.root / "no_such.toml", r"config: no such file")
    yield solve_case(fx, "config/file/is_a_directory", "config", fx.root, r"config: no such file")
    yield solve_case(fx, "config/file/empty_name", "config", "", r"config: the file name is empty")


# ---------------------------------------------------------------------------- data files

SAMPLES = {
    "non_numeric.txt": "0.1\nabc\n0.3\n",
    "words.csv": "a,b\nc,d\n",
    "empty.txt": "",
    "one_sample.txt": "0.5\n",
    "nan.txt": "0.1\nnan\n0.2\n",
    "inf.txt": "0.1\ninf\n0.2\n",
    "huge.txt": "0.1\n1e308\n0.2\n",
    "minus_huge.txt": "0.1\n-1e308\n0.2\n",
    "two_columns.txt": "0.1 0.2\n0.3 0.4\n0.5 0.6\n",
    "ragged.txt": "0.1\n0.2 0.3\n",
    "far_outside.txt": "".join(f"{50 + 0.1 * k}\n" for k in range(20)),
    "half_outside.txt": "".join(f"{(-0.5 if k % 2 else 40.0) + 0.01 * k}\n" for k in range(40)),
    "binary.npy": None,
    "pickled.npy": None,
    "truncated.npy": None,
    "2d.npy": None,
    "strings.npy": None,
    "complex.npy": None,
}
SAMPLE_NEEDLES = {
    "non_numeric.txt": r"classes\[0\]\.samples: cannot read", "words.csv": r"classes\[0\]\.samples: cannot read",
    "empty.txt": r"classes\[0\]\.samples: (cannot read|.*fewer than two)", "one_sample.txt": r"fewer than two samples",
    "nan.txt": r"non-finite values", "inf.txt": r"non-finite values", "huge.txt": r"magnitude 1e\+308",
    "minus_huge.txt": r"magnitude 1e\+308", "two_columns.txt": r"must hold 1 column",
    "ragged.txt": r"classes\[0\]\.samples: cannot read",
    "far_outside.txt": r"classes\[0\]: 100 % of its mass lies outside the mesh",
    "half_outside.txt": r"classes\[0\]: .* % of its mass lies outside the mesh",
    "binary.npy": r"classes\[0\]\.samples: cannot read", "pickled.npy": r"classes\[0\]\.samples: cannot read",
    "truncated.npy": r"classes\[0\]\.samples: cannot read", "2d.npy": r"must hold 1 column",
    "strings.npy": r"(does not hold numbers|cannot read)", "complex.npy": r"does not hold real numbers",
}


@family
def data_files(fx: Fixtures) -> Iterator[Case]:
    import numpy as np

    for name, text in SAMPLES.items():
        p = fx.path(name)
        if text is not None:
            p.write_text(text)
        elif name == "binary.npy":
            p.write_bytes(b"\x93NUMPY garbage" + bytes(range(200)))
        elif name == "pickled.npy":
            np.save(p, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
        elif name == "truncated.npy":
            np.save(p, np.linspace(-1, 1, 100))
            p.write_bytes(p.read_bytes()[:150])
        elif name == "2d.npy":
            np.save(p, np.ones((10, 3)))
        elif name == "strings.npy":
            np.save(p, np.array(["a", "b", "c"]))
        elif name == "complex.npy":
            np.save(p, np.array([1 + 2j, 3 + 4j, 5j]))
        raw = copy.deepcopy(GOOD)
        raw["classes"] = [{"samples": str(p)}]
        yield solve_case(fx, f"data/samples/{name}", "data", fx.config(raw), SAMPLE_NEEDLES[name])
    raw = copy.deepcopy(GOOD)
    raw["classes"] = [{"samples": str(fx.root)}]
    yield solve_case(fx, "data/samples/a_directory", "data", fx.config(raw), r"classes\[0\]\.samples: no such file")
    raw["classes"] = [{"samples": str(fx.samples), "bandwidth": -1.0}]
    yield solve_case(fx, "data/samples/negative_bandwidth", "data", fx.config(raw),
                     r"classes\[0\]\.bandwidth: must be > 0")
    raw["classes"] = [{"samples": str(fx.samples), "mean": 0.0}]
    yield solve_case(fx, "data/samples/and_mean", "data", fx.config(raw), r"classes\[0\]: give either")
    # [data] tables
    good_rows = fx.csv.read_text().splitlines()
    tables = {
        "dup_header.csv": "f1,f1,cls\n" + "\n".join(good_rows[1:]) + "\n",
        "empty_header_column.csv": "f1,,cls\n" + "\n".join(good_rows[1:]) + "\n",
        "header_only.csv": good_rows[0] + "\n",
        "empty.csv": "",
        "ragged.csv": good_rows[0] + "\n" + good_rows[1] + ",9\n" + "\n".join(good_rows[2:]) + "\n",
        "non_numeric.csv": good_rows[0] + "\n" + "oops,1,a\n" + "\n".join(good_rows[2:]) + "\n",
        "missing_value.csv": good_rows[0] + "\n" + ",1,a\n" + "\n".join(good_rows[2:]) + "\n",
        "missing_label.csv": good_rows[0] + "\n" + "0.1,1,\n" + "\n".join(good_rows[2:]) + "\n",
        "nan_value.csv": good_rows[0] + "\n" + "nan,1,a\n" + "\n".join(good_rows[2:]) + "\n",
        "huge_value.csv": good_rows[0] + "\n" + "1e308,1,a\n" + "\n".join(good_rows[2:]) + "\n",
        "minus_huge_value.csv": good_rows[0] + "\n" + "-1e308,1,a\n" + "\n".join(good_rows[2:]) + "\n",
        "one_class.csv": good_rows[0] + "\n" + "\n".join(r.rsplit(",", 1)[0] + ",a" for r in good_rows[1:]) + "\n",
        "single_sample_class.csv": good_rows[0] + "\n" + "\n".join(good_rows[1:41]) + "\n" + good_rows[41] + "\n",
        "binary.csv": None,
        "garbage.npz": None,
        "truncated.npz": None,
        "2d_column.npz": None,
        "garbage.h5": None,
        "truncated.h5": None,
        "no_label.csv": "f1,f2,kind\n" + "\n".join(good_rows[1:]) + "\n",
    }
    needles = {
        "dup_header.csv": r"column 'f1' appears twice in the header",
        "empty_header_column.csv": r"the header has an empty column name", "header_only.csv": r"has a header but no samples",
        "empty.csv": r"is empty", "ragged.csv": r"line 2: expected 3 fields, got 4",
        "non_numeric.csv": r"column 'f1' of .* is not numeric \(value 'oops'\)",
        "missing_value.csv": r"column 'f1' of .* has a missing or non-finite value in sample 1",
        "missing_label.csv": r"column 'cls' of .* has a missing label in sample 1",
        "nan_value.csv": r"column 'f1' of .* has a missing or non-finite value",
        "huge_value.csv": r"column 'f1' of .* has a value of magnitude 1e\+308",
        "minus_huge_value.csv": r"column 'f1' of .* has a value of magnitude 1e\+308",
        "one_class.csv": r"has 1 class\(es\) in column 'cls'; at least two needed",
        "single_sample_class.csv": r"class 'b' of .* has 1 sample\(s\)",
        "binary.csv": r"data: (cannot read|.*)", "garbage.npz": r"data: cannot read",
        "truncated.npz": r"data: cannot read", "2d_column.npz": r"must be 1-D",
        "garbage.h5": r"data\.file: .*(not an HDF5 file|damaged)", "truncated.h5": r"data\.file: .*damaged HDF5 file",
        "no_label.csv": r"data\.label: no column 'cls'",
    }
    for name, text in tables.items():
        p = fx.path(name)
        if text is not None:
            p.write_text(text)
        elif name == "binary.csv":
            p.write_bytes(b"\xff\xfe\x00\x01" * 100)
            needles[name] = r"data: cannot read"
        elif name == "garbage.npz":
            p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
        elif name == "truncated.npz":
            np.savez(p, f1=np.ones(80), cls=np.array(["a", "b"] * 40))
            p.write_bytes(p.read_bytes()[:300])
        elif name == "2d_column.npz":
            np.savez(p, f1=np.ones((80, 2)), cls=np.array(["a", "b"] * 40))
        elif name == "garbage.h5":
            p.write_bytes(b"not hdf5 at all" * 20)
        elif name == "truncated.h5":
            import h5py
            with h5py.File(p, "w") as f:
                f["f1"] = np.ones(80)
                f["cls"] = np.array([b"a", b"b"] * 40)
            p.write_bytes(p.read_bytes()[:700])
        raw = copy.deepcopy(DATA)
        raw["data"]["file"] = str(p)
        yield solve_case(fx, f"data/table/{name}", "data", fx.config(raw), needles[name])
    # the mesh that misses the data (x_min = 10, x_max = 20; data near -0.5)
    raw = copy.deepcopy(DATA)
    raw["data"]["file"] = str(fx.csv)
    raw["mesh"].update(x_min=10.0, x_max=20.0)
    yield solve_case(fx, "data/table/mesh_misses_the_data", "data", fx.config(raw),
                     r"mesh\.x_min: 100 % of the samples of .* lie outside the mesh")
    for key, value, needle in (
            (("data", "test_fraction"), -0.1, r"data\.test_fraction: must be >= 0"),
            (("data", "test_fraction"), 1.0, r"data\.test_fraction: must be <= 0\.9"),
            (("data", "columns"), ["f1", "f1"], r"data\.columns: 'f1' is listed twice"),
            (("data", "columns"), ["nope"], r"data\.columns: no column 'nope'"),
            (("data", "columns"), ["cls"], r"data\.columns: 'cls' is the label column"),
            (("data", "columns"), ["f1", "f2"], r"data|projection|features"),
            (("data", "classes"), ["a", "zzz"], r"data\.classes: class 'zzz' has no samples"),
            (("data", "features"), 3, r"data\.features: the state dimension must be 1 or 2"),
            (("data", "features"), 0, r"data\.features: the state dimension must be 1 or 2"),
            (("data", "bandwidth"), "wide", r"data\.bandwidth: must be one of"),
            (("data", "bandwidth"), -0.1, r"data\.bandwidth: must be > 0"),
            (("data", "projection"), "tsne", r"data\.projection: must be one of"),
            (("data", "file"), "", r"data\.file: must name a file"),
            (("data", "file"), "builtin:nosuch", r"data\.file: no shipped data set 'nosuch'"),
            (("data", "file"), "missing.csv", r"data\.file: no such file"),
            (("data", "seed"), -1, r"data\.seed: must be an integer >= 0"),
            (("data", "head"), "magic", r"data\.head: must be one of"),
            (("data", "label"), "nolabel", r"data\.label: no column 'nolabel'"),
            (("data", "wat"), 1, r"data\.wat: unknown key")):
        raw = copy.deepcopy(DATA)
        raw["data"]["file"] = str(fx.csv)
        yield solve_case(fx, f"data/key/{'.'.join(key)}={value!r}", "data", fx.config(with_(raw, key, value)), needle)
    raw = copy.deepcopy(DATA)
    raw["data"]["file"] = str(fx.csv)
    raw["classes"] = [{"mean": 0.0, "var": 1.0}]
    yield solve_case(fx, "data/key/data_and_classes", "data", fx.config(raw), r"data: give either a \[data\] section")


# ---------------------------------------------------------------------------- checkpoints

def _signature_offsets(raw: bytes) -> list[int]:
    sigs = (b"OHDR", b"OCHK", b"BTHD", b"BTLF", b"BTIN", b"FRHP", b"FHDB", b"FHIB", b"FSHD", b"FSSE", b"GCOL",
            b"TREE", b"HEAP", b"SNOD", b"\x89HDF")
    out = []
    for s in sigs:
        i = raw.find(s)
        while i >= 0:
            out.append(i)
            i = raw.find(s, i + 1)
    return sorted(out)


def corruption_offsets(path: Path, data_names: tuple[str, ...]) -> list[int]:
    """Byte offsets to damage: the superblock, around every HDF5 metadata signature
    (object headers, B-trees, fractal heaps of the attributes, free-space sections), inside
    every dataset's data, and evenly over the file."""
    import h5py

    raw = path.read_bytes()
    n = len(raw)
    offs = {0, 3, 8, 9, 11, 12, 16, 24, 28, 36, 44, 47}
    for o in _signature_offsets(raw):
        offs |= {o + d for d in (0, 4, 5, 8, 13, 24)}
    with h5py.File(path, "r") as f:
        for name in data_names:
            if name in f:
                off = f[name].id.get_offset()
                if off is not None:
                    size = f[name].id.get_storage_size()
                    offs |= {off, off + size // 2, off + max(size - 1, 0)}
    offs |= {k * n // 17 for k in range(17)}
    return sorted(o for o in offs if 0 <= o < n)


def _flip(src: Path, dst: Path, off: int, bit: int) -> None:
    raw = bytearray(src.read_bytes())
    raw[off] ^= 1 << bit
    dst.write_bytes(bytes(raw))


def edit_checkpoint(src: Path, dst: Path, attrs: dict | None = None, datasets: dict | None = None,
                    drop: tuple[str, ...] = (), recompute: bool = True, resign: bool = True) -> Path:
    """A copy of a checkpoint with some attributes or datasets changed, its CRC (and the
    datasets' checksums of replaced data) recomputed and a fresh digest sidecar: only the
    schema checks can refuse it."""
    import h5py
    import numpy as np

    from mfc_hpc.fileio.checkpoint import meta_crc
    from mfc_hpc.fileio.checksum import checksum_block, hex64
    from mfc_hpc.fileio.hdf5 import file_digest, text_attr, write_sidecar

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        for k, v in (attrs or {}).items():
            if v is KeyError:
                del f.attrs[k]
            else:
                f.attrs[k] = text_attr(v) if isinstance(v, str) else v
        for k, v in (datasets or {}).items():
            v = np.asarray(v)
            del f[k]
            f[k] = v
            if v.dtype == np.float64:
                f[k].attrs["checksum"] = text_attr(hex64(checksum_block(v, v.shape, (0,) * v.ndim)) if v.size
                                                   else hex64(0))
        for k in drop:
            del f[k]
        if recompute and "meta_crc32" in f.attrs:
            a = {k: f.attrs[k] for k in f.attrs}
            f.attrs["meta_crc32"] = meta_crc(a)
    if resign:
        size, dg = file_digest(dst)
        write_sidecar(dst, size, dg)
    return dst


@family
def checkpoints(fx: Fixtures) -> Iterator[Case]:
    import h5py
    import numpy as np

    good = fx.checkpoint
    raw = good.read_bytes()
    n = len(raw)
    offs = corruption_offsets(good, ("rho", "phi", "t", "x", "x1", "residuals"))
    for sidecar in (True, False):
        tag = "with_sidecar" if sidecar else "no_sidecar"
        for k, off in enumerate(offs):
            if not sidecar and k % 3:  # a child process reads each unsigned file: every third offset
                continue
            p = fx.path(f"flip_{off}.h5")
            _flip(good, p, off, k % 8)
            if sidecar:
                shutil.copy(f"{good}.sum", f"{p}.sum")
            yield Case(f"checkpoint/{tag}/flip@{off}.{k % 8}", "checkpoint", "checkpoint", {"path": str(p)}, 2,
                       r"checkpoint .*: (corrupted|truncated|damaged|checksum mismatch|foreign|invalid|unknown)",
                       may_pass=not sidecar)
        for cut in sorted({0, 1, 7, 8, 47, 48, 100, 512, 1024, 2048, n // 4, n // 3, n // 2, 2 * n // 3,
                           n - 4096, n - 1024, n - 100, n - 9, n - 1}):
            if not 0 <= cut < n:
                continue
            p = fx.path(f"trunc_{cut}.h5")
            p.write_bytes(raw[:cut])
            if sidecar:
                shutil.copy(f"{good}.sum", f"{p}.sum")
            yield Case(f"checkpoint/{tag}/truncated@{cut}", "checkpoint", "checkpoint", {"path": str(p)}, 2,
                       r"checkpoint .*: (truncated|damaged|foreign file: not HDF5|corrupted)")
    p = fx.path("extended.h5")
    p.write_bytes(raw + b"\0" * 100)
    shutil.copy(f"{good}.sum", f"{p}.sum")
    yield Case("checkpoint/with_sidecar/extended", "checkpoint", "checkpoint", {"path": str(p)}, 2,
               r"truncated or extended file")
    # damaged sidecars
    side = json.loads(Path(f"{good}.sum").read_text())
    for name, text in (("garbage", "not json"), ("empty", ""), ("list", "[1, 2]"),
                       ("wrong_format", json.dumps({**side, "format": "other"})),
                       ("size_string", json.dumps({**side, "size": "big"})),
                       ("wrong_size", json.dumps({**side, "size": side["size"] + 8})),
                       ("wrong_digest", json.dumps({**side, "digest": "0" * 16})),
                       ("huge", "{" + " " * 10000 + "}")):
        p = fx.path("side.h5")
        shutil.copy(good, p)
        Path(f"{p}.sum").write_text(text)
        yield Case(f"checkpoint/sidecar/{name}", "checkpoint", "checkpoint", {"path": str(p)}, 2,
                   r"checkpoint .*: (.*sidecar .* is damaged|truncated or extended|corrupted)")
    # not checkpoints
    p = fx.path("text.h5")
    p.write_text("not a checkpoint\n")
    yield Case("checkpoint/foreign/text", "checkpoint", "checkpoint", {"path": str(p)}, 2, r"foreign file: not HDF5")
    p = fx.path("empty.h5")
    p.write_bytes(b"")
    yield Case("checkpoint/foreign/empty", "checkpoint", "checkpoint", {"path": str(p)}, 2, r"not HDF5 \(empty\)")
    p = fx.path("other.h5")
    with h5py.File(p, "w") as f:
        f["rho"] = np.zeros(3)
    yield Case("checkpoint/foreign/other_hdf5", "checkpoint", "checkpoint", {"path": str(p)}, 2, r"foreign HDF5 file")
    yield Case("checkpoint/foreign/solution", "checkpoint", "checkpoint", {"path": str(fx.solution)}, 2,
               r"an mfc_hpc solution file, not a checkpoint")
    yield Case("checkpoint/foreign/missing", "checkpoint", "checkpoint", {"path": str(fx.root / "none.h5")}, 2,
               r"no such file")
    yield Case("checkpoint/foreign/directory", "checkpoint", "checkpoint", {"path": str(fx.root)}, 2,
               r"no such file")
    # attributes restart trusts, edited with the CRC and the digest recomputed (only the schema can refuse them)
    with h5py.File(good, "r") as f:
        resume = json.loads(f.attrs["resume"])
        mesh = json.loads(f.attrs["mesh"])
    def r_(**ch):
        r = copy.deepcopy(resume)
        for k, v in ch.items():
            if v is KeyError:
                r.pop(k, None)
            else:
                r[k] = v
        return json.dumps(r)
    edits = [
        ("phase_bogus", {"resume": r_(phase="bogus")}, r"damaged resume metadata: phase = 'bogus'"),
        ("phase_missing", {"resume": r_(phase=KeyError)}, r"damaged resume metadata: phase = None"),
        ("level_99", {"resume": r_(level=99)}, r"damaged resume metadata: level = 99"),
        ("level_minus_1", {"resume": r_(level=-1)}, r"damaged resume metadata: level = -1"),
        ("level_string", {"resume": r_(level="0")}, r"damaged resume metadata: level = '0'"),
        ("level_1_history_0", {"resume": r_(level=1)}, r"history has 0 levels, level is 1"),
        ("attempt_5", {"resume": r_(attempt=5)}, r"damaged resume metadata: attempt = 5"),
        ("history_not_list", {"resume": r_(history="x")}, r"history has \? levels"),
        ("newton_nan", {"resume": r_(newton={"iteration": 1, "history": [1.0, float("nan")]})},
         r"damaged resume metadata: newton\.history = nan"),
        ("newton_negative", {"resume": r_(newton={"iteration": 0, "history": [-1.0]})},
         r"damaged resume metadata: newton\.history = -1\.0"),
        ("newton_count_mismatch", {"resume": r_(newton={"iteration": 5, "history": [1.0]})},
         r"newton\.history has 1 residuals at iteration 5"),
        ("cont_param", {"resume": r_(phase="loss", cont={"param": "x", "u": 0, "step": 0.1, "stages": 0,
                                                         "value": 0.0})}, r"cont\.param = 'x'"),
        ("cont_wrong_phase", {"resume": r_(cont={"param": "loss", "u": 0.5, "step": 0.1, "stages": 1,
                                                 "value": 0.5})}, r"a loss continuation cursor in phase"),
        ("cont_step_zero", {"resume": r_(phase="loss", cont={"param": "loss", "u": 0.5, "step": 0.0, "stages": 1,
                                                             "value": 0.5})}, r"cont\.step = 0\.0"),
        ("cont_value_2", {"resume": r_(phase="loss", cont={"param": "loss", "u": 2.0, "step": 0.1, "stages": 1,
                                                           "value": 2.0})}, r"cont\.value = 2\.0"),
        ("params_nu_negative", {"resume": r_(params={"nu": -0.1, "loss_weight": 1.0})}, r"params\.nu = -0\.1"),
        ("params_lw_2", {"resume": r_(params={"nu": 0.1, "loss_weight": 2.0})}, r"params\.loss_weight = 2\.0"),
        ("params_nu_inf", {"resume": r_(params={"nu": float("inf"), "loss_weight": 1.0})}, r"params\.nu = inf"),
        ("record_not_table", {"resume": r_(record=[1])}, r"record is not a table"),
        ("record_stages", {"resume": r_(record={"stages": "x", "newton_iterations": 0})}, r"record\.stages"),
        ("record_count", {"resume": r_(record={"stages": [], "newton_iterations": -3})},
         r"record\.newton_iterations = -3"),
        ("mesh_garbage", {"resume": r_(mesh="17x4")}, r"mesh = '17x4'"),
        ("restarts_negative", {"resume": r_(restarts=-1)}, r"restarts = -1"),
        ("wall_nan", {"resume": r_(wall_used=float("nan"))}, r"wall_used = nan"),
        ("resume_list", {"resume": "[1, 2]"}, r"config or resume is not a table"),
        ("resume_not_json", {"resume": "{phase: done"}, r"metadata is not valid JSON"),
        ("process_grid_text", {"process_grid": "abc"}, r"metadata is not valid JSON"),
        ("process_grid_negative", {"process_grid": "[-1, 1]"}, r"damaged: process_grid"),
        ("process_grid_length", {"process_grid": "[1, 1, 1, 1]"}, r"damaged: process_grid \[1, 1, 1, 1\] has 4"),
        ("process_grid_dict", {"process_grid": '{"a": 1}'}, r"damaged: process_grid"),
        ("mesh_nodes_1", {"mesh": json.dumps({**mesh, "nodes": [1]})}, r"damaged: impossible mesh"),
        ("mesh_depth_0", {"mesh": json.dumps({**mesh, "depth": 0.0})}, r"damaged: impossible mesh"),
        ("mesh_missing_layers", {"mesh": json.dumps({k: v for k, v in mesh.items() if k != "layers"})},
         r"damaged: attribute 'mesh' lacks"),
        ("mesh_other_bounds", {"mesh": json.dumps({**mesh, "x_min": [-5.0]})}, r"coordinates of axis 1 span"),
        ("mesh_other_depth", {"mesh": json.dumps({**mesh, "depth": 2.0})}, r"depth levels t do not increase from 0"),
        ("mesh_other_layers", {"mesh": json.dumps({**mesh, "layers": 8})}, r"dataset 'rho' has shape"),
        ("reason_bogus", {"reason": "bogus"}, r"damaged: reason 'bogus'"),
        ("sequence_negative", {"sequence": -5}, r"damaged: attribute 'sequence' = -5"),
        ("ranks_zero", {"ranks": 0}, r"damaged: attribute 'ranks' = 0"),
        ("format_version_3", {"format_version": 3}, r"format version 3 is newer"),
        ("format_version_0", {"format_version": 0}, r"invalid format version 0"),
        ("format_version_text", {"format_version": "two"}, r"invalid format version"),
        ("format_foreign", {"format": "someone.else"}, r"foreign file: format 'someone\.else'"),
        ("resume_missing", {"resume": KeyError}, r"damaged: attribute 'resume' missing"),
        ("checksum_algorithm", {"checksum": "md5"}, r"unknown checksum algorithm 'md5'"),
    ]
    for name, attrs, needle in edits:
        p = edit_checkpoint(good, fx.path(f"{name}.h5"), attrs=attrs)
        yield Case(f"checkpoint/metadata/{name}", "checkpoint", "checkpoint", {"path": str(p)}, 2, needle)
    p = edit_checkpoint(good, fx.path("crc.h5"), attrs={"reason": "time"}, recompute=False)
    yield Case("checkpoint/metadata/crc_mismatch", "checkpoint", "checkpoint", {"path": str(p)}, 2,
               r"metadata CRC-32 mismatch")
    p = edit_checkpoint(good, fx.path("crc_text.h5"), attrs={"meta_crc32": "abc"}, recompute=False)
    yield Case("checkpoint/metadata/crc_unreadable", "checkpoint", "checkpoint", {"path": str(p)}, 2,
               r"metadata CRC-32 unreadable")
    # datasets: checksums of the small ones (residuals, coordinates) and the state; shapes, dtypes
    with h5py.File(good, "r") as f:
        rho, t = f["rho"][()], f["t"][()]
        x = f["x1"][()]
    def raw_edit(name: str, fn) -> Path:
        p = fx.path(f"{name}.h5")
        shutil.copy(good, p)
        with h5py.File(p, "r+") as f:
            fn(f)
        from mfc_hpc.fileio.hdf5 import file_digest, write_sidecar
        size, dg = file_digest(p)
        write_sidecar(p, size, dg)
        return p
    def set_residuals(f):
        f["residuals"][...] = f["residuals"][()] * 1.5 if f["residuals"].size else f["residuals"][()]
        if not f["residuals"].size:
            del f["residuals"]
            ds = f.create_dataset("residuals", data=np.array([1.0, 0.5]))
            ds.attrs["checksum"] = np.bytes_(b"0000000000000000")
    rawcases = [
        ("residuals_checksum", set_residuals, r"checksum mismatch in dataset 'residuals'"),
        ("x1_checksum", lambda f: f["x1"].__setitem__(0, x[0] - 1e-9), r"checksum mismatch in dataset 'x1'"),
        ("t_checksum", lambda f: f["t"].__setitem__(1, t[1] * 1.01), r"checksum mismatch in dataset 't'"),
        ("rho_value", lambda f: f["rho"].__setitem__((0, 0, 3), rho[0, 0, 3] * 2), r"checksum mismatch in dataset 'rho'"),
        ("phi_nan", lambda f: f["phi"].__setitem__((1, 0, 3), np.nan), r"checksum mismatch in dataset 'phi'"),
        ("rho_checksum_attr", lambda f: f["rho"].attrs.__setitem__("checksum", np.bytes_(b"1234")),
         r"checksum mismatch in dataset 'rho'"),
        ("rho_no_checksum", lambda f: f["rho"].attrs.__delitem__("checksum"), r"dataset 'rho' has no checksum"),
        ("rho_missing", lambda f: f.__delitem__("rho"), r"dataset 'rho' missing"),
        ("t_missing", lambda f: f.__delitem__("t"), r"dataset 't' missing"),
        ("phi_float32", lambda f: (f.__delitem__("phi"), f.create_dataset("phi", data=rho.astype("f4"))),
         r"dataset 'phi' has shape .* float32"),
        ("rho_shape", lambda f: (f.__delitem__("rho"), f.create_dataset("rho", data=rho[:2])),
         r"dataset 'rho' has shape"),
        ("x1_2d", lambda f: (f.__delitem__("x1"), f.create_dataset("x1", data=np.ones((17, 1)))),
         r"dataset 'x1' has shape"),
    ]
    for name, fn, needle in rawcases:
        p = raw_edit(name, fn)
        yield Case(f"checkpoint/datasets/{name}", "checkpoint", "checkpoint", {"path": str(p)}, 2, needle)
    # coordinates that do not increase, with consistent checksums (only the range checks refuse them)
    p = edit_checkpoint(good, fx.path("t_decreasing.h5"), datasets={"t": t[::-1].copy()})
    yield Case("checkpoint/datasets/t_decreasing", "checkpoint", "checkpoint", {"path": str(p)}, 2,
               r"depth levels t do not increase")
    p = edit_checkpoint(good, fx.path("x_decreasing.h5"), datasets={"x1": x[::-1].copy()})
    yield Case("checkpoint/datasets/x_decreasing", "checkpoint", "checkpoint", {"path": str(p)}, 2,
               r"coordinates of axis 1 do not increase")
    # a version-1 style file (variable-length strings in the global heap) with a flipped bit in the
    # collection size after its GCOL signature: the defect that hung HDF5 1.10 in the release
    v1 = make_v1_checkpoint(good, fx.path("v1.h5"))
    yield Case("checkpoint/v1/good_copy_is_readable", "checkpoint", "checkpoint", {"path": str(v1)}, 0, "")
    for off, bit in gcol_size_flips(v1):
        p = fx.path(f"v1_gcol_{off}_{bit}.h5")
        _flip(v1, p, off, bit)
        yield Case(f"checkpoint/v1/gcol_size@{off}.{bit}", "checkpoint", "checkpoint", {"path": str(p)}, 2,
                   r"checkpoint .*: (damaged|corrupted|truncated|checksum|foreign|invalid)", may_pass=True,
                   same_as=str(v1),
                   timeout=60.0)


def make_v1_checkpoint(good: Path, dst: Path) -> Path:
    """A format-1 checkpoint (as the 1-D release wrote: variable-length string attributes
    in HDF5's global heap, no sidecar) holding the good checkpoint's 1-D state."""
    import h5py
    import numpy as np

    from mfc_hpc.fileio.checkpoint import meta_crc

    with h5py.File(good, "r") as f:
        a = {k: (v.decode() if isinstance(v, (bytes, np.bytes_)) else v) for k, v in f.attrs.items()}
        data = {k: (f[k][()], f[k].attrs["checksum"]) for k in ("rho", "phi", "x", "t")}
    mesh = json.loads(a["mesh"])
    mesh = {**mesh, "nodes": mesh["nodes"][0], "x_min": mesh["x_min"][0], "x_max": mesh["x_max"][0]}
    a.update(format_version=1, mesh=json.dumps(mesh))
    a.pop("meta_crc32")
    with h5py.File(dst, "w") as f:  # default libver, str attributes: variable-length, in the global heap
        for k, v in a.items():
            f.attrs[k] = v if not isinstance(v, np.generic) else v.item()
        f.attrs["meta_crc32"] = meta_crc(a, 1)
        for k, (v, c) in data.items():
            f[k] = v
            f[k].attrs["checksum"] = c.decode() if isinstance(c, bytes) else str(c)
    return dst


def gcol_size_flips(path: Path) -> list[tuple[int, int]]:
    """Bit flips in the size fields of HDF5's global heap: the collection's (8 bytes after
    the ``GCOL`` signature, version and reserved bytes) and its first objects' (each object:
    index, reference count, reserved, then an 8-byte size). Making a size larger than the
    object is what sends HDF5 1.10 into an endless loop."""
    import struct

    raw = path.read_bytes()
    i = raw.find(b"GCOL")
    if i < 0:
        return []
    out = [(i + 9, 0), (i + 9, 4)]
    size = struct.unpack("<Q", raw[i + 8:i + 16])[0]
    o, k = i + 16, 0
    while o + 16 <= min(len(raw), i + size) and k < 3:
        idx = struct.unpack("<H", raw[o:o + 2])[0]
        sz = struct.unpack("<Q", raw[o + 8:o + 16])[0]
        if idx == 0:
            break
        out += [(o + 9, 3), (o + 9, 4), (o + 8, 7)]
        o += 16 + (sz + 7) // 8 * 8
        k += 1
    return out


# ---------------------------------------------------------------------------- solution files

@family
def solutions(fx: Fixtures) -> Iterator[Case]:
    import h5py
    import numpy as np

    good = fx.solution
    raw = good.read_bytes()
    n = len(raw)
    offs = corruption_offsets(good, ("rho", "phi", "t", "x", "x1"))[::2]
    for sidecar in (True, False):
        tag = "with_sidecar" if sidecar else "no_sidecar"
        for k, off in enumerate(offs):
            if not sidecar and k % 2:
                continue
            p = fx.path(f"flip_{off}.h5")
            _flip(good, p, off, (3 * k) % 8)
            if sidecar:
                shutil.copy(f"{good}.sum", f"{p}.sum")
            yield Case(f"solution/{tag}/flip@{off}.{(3 * k) % 8}", "solution", "solution", {"path": str(p)}, 2,
                       r"(corrupted|truncated|damaged|checksum mismatch|not an mfc_hpc solution|inconsistent|"
                       r"no rho/phi|not valid JSON|no checksum|newer)", may_pass=not sidecar)
        for cut in (0, 8, 100, 1024, n // 3, n // 2, n - 512, n - 1):
            p = fx.path(f"trunc_{cut}.h5")
            p.write_bytes(raw[:cut])
            if sidecar:
                shutil.copy(f"{good}.sum", f"{p}.sum")
            yield Case(f"solution/{tag}/truncated@{cut}", "solution", "solution", {"path": str(p)}, 2,
                       r"(truncated|damaged|not HDF5|corrupted)")
    p = fx.path("future.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = 9
    yield Case("solution/future", "solution", "solution", {"path": str(p)}, 2, r"format version 9 is newer")
    p = fx.path("dim_garbage.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        f.attrs["dim"] = 7
    yield Case("solution/dim_garbage", "solution", "solution", {"path": str(p)}, 2, r"dimension or coordinates")
    p = fx.path("no_phi.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        del f["phi"]
    yield Case("solution/no_phi", "solution", "solution", {"path": str(p)}, 2, r"no rho/phi datasets")
    p = fx.path("config_not_json.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        f.attrs["config"] = np.bytes_(b"{not json")
    yield Case("solution/config_not_json", "solution", "solution", {"path": str(p)}, 2, r"'config' is not valid JSON")
    p = fx.path("checkpoint_as_solution.h5")
    shutil.copy(fx.checkpoint, p)
    yield Case("solution/a_checkpoint", "solution", "solution", {"path": str(p)}, 2,
               r"not an mfc_hpc solution file \(format 'mfc_hpc\.checkpoint'\)")
    p = fx.path("rho_edited.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        f["rho"][0, 0, 0] = 5.0
    yield Case("solution/rho_edited_no_sidecar", "solution", "solution", {"path": str(p)}, 2,
               r"checksum mismatch in dataset 'rho'")


# ---------------------------------------------------------------------------- model files (predict)

def make_models(fx: Fixtures) -> dict[str, Path]:
    """Good exported networks next to the good fixtures: a 2-D ``model.npz`` (format 2), its
    ``model.onnx``, and the release's 1-D format-1 model file; they classify ``good.csv``'s
    ``f1, f2`` (``f1`` in 1-D) as classes ``a``/``b``."""
    import numpy as np

    from mfc_hpc.learning.network import ResidualNetwork
    from mfc_hpc.learning.onnx_export import save_onnx
    from mfc_hpc.numerics.grid import StateGrid
    from mfc_hpc.problem.losses import SoftmaxHead

    good = fx.root / "good"
    out = {"npz": good / "model.npz", "onnx": good / "model.onnx", "v1": good / "model_v1.npz"}
    if not out["npz"].exists():
        rng = np.random.default_rng(1)
        grid = StateGrid((-4.0, -4.0), (4.0, 4.0), (9, 9))
        net = ResidualNetwork(grid, 0.3 * rng.standard_normal((4, 2, 9, 9)), 0.25, 0.1,
                              SoftmaxHead(np.array([[-1.0, 0.2], [1.0, -0.2]]), np.zeros(2), 1.0), ("a", "b"),
                              config={"data": {"label": "cls"}})
        net.save(out["npz"])
        save_onnx(net, out["onnx"])
        shutil.copy(REPO / "tests" / "data" / "network_v1" / "model.npz", out["v1"])
        # the release's model reads one standardised feature and has iris's species
        rng = np.random.default_rng(2)
        names = ("setosa", "versicolor", "virginica")
        (good / "v1.csv").write_text("f1,cls\n" + "".join(f"{rng.normal(c - 1.0, 0.4):.6f},{names[c]}\n"
                                                          for c in (0, 1, 2) for _ in range(10)))
    return out


def _model_args(path: str) -> dict:
    """The table and ``--feature`` a model of :func:`make_models` is run on."""
    good = Path(path).parent
    if Path(path).name == "model_v1.npz":
        return {"data": str(good / "v1.csv"), "feature": "f1"}
    return {"data": str(good / "good.csv"), "feature": "f1,f2"}


def _npz_member_offsets(path: Path) -> list[int]:
    """Offsets inside a zip's members, its local headers and its central directory."""
    raw = path.read_bytes()
    n = len(raw)
    offs = {0, 4, 8, 14, 18, 22, 26, 30, 40, n - 22, n - 10, n - 6, n - 2}
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        i = raw.find(sig)
        while i >= 0:
            offs.update({i + 6, i + 14, i + 20, i + 30, i + 60, i + 200})
            i = raw.find(sig, i + 4)
    offs.update(range(n // 7, n, max(1, n // 7)))
    return sorted(o for o in offs if 0 <= o < n)


@family
def models(fx: Fixtures) -> Iterator[Case]:
    """``mfc-hpc predict`` on damaged and wrong model files, tables and report targets."""
    import numpy as np

    m = make_models(fx)
    csv = str(fx.csv)
    npz_err = r"model: .*(not a readable NPZ model|lacks|does not match|non-finite|disagrees|format_version|" \
              r"not an mfc_hpc\.network|must|class names|head|grid|JSON|projection)"
    onnx_err = r"model: .*(not a readable ONNX model|checksum mismatch|not an mfc_hpc|format_version|metadata)"
    for kind, good in (("npz", m["npz"]), ("onnx", m["onnx"]), ("v1", m["v1"])):
        raw = good.read_bytes()
        n = len(raw)
        err = onnx_err if kind == "onnx" else npz_err
        base = _model_args(str(good))
        for cut in sorted({0, 1, 10, 30, 100, n // 4, n // 2, 3 * n // 4, n - 30, n - 1}):
            p = fx.path(f"trunc_{cut}.{good.suffix[1:]}")
            p.write_bytes(raw[:cut])
            yield Case(f"model/{kind}/truncated@{cut}", "model", "predict", dict(base, path=str(p)), 2, err,
                       may_pass=True, same_as=str(good))
        offs = _npz_member_offsets(good) if kind != "onnx" else sorted(set(range(0, n, max(1, n // 40))) | {n - 1})
        for k, off in enumerate(offs):
            p = fx.path(f"flip_{off}.{good.suffix[1:]}")
            _flip(good, p, off, (5 * k) % 8)
            yield Case(f"model/{kind}/flip@{off}.{(5 * k) % 8}", "model", "predict", dict(base, path=str(p)), 2, err,
                       may_pass=True, same_as=str(good))
    # well-formed files with wrong content
    with np.load(m["npz"], allow_pickle=False) as f:
        good_arrays = {k: f[k] for k in f.files}
    edits = {
        "no_drift": ({"drift": KeyError}, r"lacks drift"),
        "nan_drift": ({"drift": np.full_like(good_arrays["drift"], np.nan)}, r"non-finite"),
        "drift_shape": ({"drift": good_arrays["drift"][:, :, :5]}, r"does not match the grid"),
        "dt_negative": ({"dt": np.array(-0.1)}, r"dt must be > 0"),
        "nu_inf": ({"nu": np.array(np.inf)}, r"nu >= 0"),
        "future_version": ({"format_version": np.array(7)}, r"format_version 7"),
        "not_a_model": ({"format": np.array("something.else")}, r"not an mfc_hpc\.network"),
        "dim_3": ({"dim": np.array(3)}, r"d = 1 or 2"),
        "grid_reversed": ({"grid_upper": np.array([-5.0, -5.0])}, r"grid_lower < grid_upper"),
        "interpolant": ({"interpolant": np.array("bilinear")}, r"unknown interpolant"),
        "head_shape": ({"head_weights": np.ones((2, 3))}, r"head_weights"),
        "head_nan": ({"head_biases": np.array([np.nan, 0.0])}, r"non-finite"),
        "names": ({"class_names": np.array(["a", "b", "c"])}, r"3 class names"),
        "config_not_json": ({"config": np.array("{oops")}, r"not JSON"),
    }
    for name, (change, needle) in edits.items():
        a = dict(good_arrays)
        for k, v in change.items():
            if v is KeyError:
                a.pop(k)
            else:
                a[k] = v
        p = fx.path(f"{name}.npz")
        with open(p, "wb") as f:
            np.savez(f, **a)
        yield Case(f"model/npz/edited/{name}", "model", "predict", {"path": str(p)}, 2, needle)
    p = fx.path("model.npz")
    p.write_text("not a zip file\n")
    yield Case("model/npz/text", "model", "predict", {"path": str(p)}, 2, r"not a readable NPZ model")
    p = fx.path("model.onnx")
    p.write_bytes(b"\x00" * 64)
    yield Case("model/onnx/zeros", "model", "predict", {"path": str(p)}, 2, onnx_err)
    yield Case("model/missing", "model", "predict", {"path": str(fx.root / "nope.npz")}, 2, r"no such file")
    yield Case("model/a_directory", "model", "predict", {"path": str(fx.root / "good")}, 2, r"no such file")
    # tables and arguments
    hdr = fx.path("header_only.csv")
    hdr.write_text("f1,f2,cls\n")
    letters = fx.path("letters.csv")
    letters.write_text("f1,f2,cls\nx,1.0,a\n0.2,0.1,b\n")
    other = fx.path("other_labels.csv")
    other.write_text("f1,f2,cls\n0.1,0.2,a\n0.2,0.1,zebra\n")
    for cid, path, args, needle in (
            ("header_only", m["npz"], {"data": str(hdr)}, r"has a header but no samples"),
            ("header_only_onnx", m["onnx"], {"data": str(hdr)}, r"has a header but no samples"),
            ("missing_table", m["npz"], {"data": str(fx.root / "none.csv")}, r"no such file"),
            ("non_numeric", m["npz"], {"data": str(letters)}, r"f1"),
            ("unknown_label", m["npz"], {"data": str(other)}, r"'zebra'.* not classes of the model"),
            ("feature_count", m["npz"], {"feature": "f1"}, r"--feature names 1 column\(s\); the model's state has 2"),
            ("feature_missing", m["npz"], {"feature": "f1,zz"}, r"lacks the model's feature column\(s\) zz"),
            ("label_missing", m["npz"], {"label": "nolabel"}, r"no label column 'nolabel'"),
            ("onnx_noise", m["onnx"], {"noise": True}, r"--noise needs an NPZ model"),
            ("json_dir", m["npz"], {"json": str(fx.root)}, r"--json: .* is a directory"),
            ("json_no_parent", m["npz"], {"json": str(fx.root / "no" / "r.json")}, r"--json: the directory .* does not exist"),
            ("json_empty", m["npz"], {"json": ""}, r"--json: the file name is empty"),
            ("v1_two_features", m["v1"], {"feature": "f1,f2", "data": str(fx.csv)},
             r"--feature names 2 column\(s\); the model's state has 1")):
        yield Case(f"model/input/{cid}", "model", "predict", dict({"path": str(path)}, **args), 2, needle)


# ---------------------------------------------------------------------------- PETSc options

#: (options, what the message must say)
PETSC_CASES: list[tuple[list[str], str]] = [
    (["-mfc_ksp_type", "nosuch"], r"PETSc option -mfc_ksp_type nosuch: unknown type"),
    (["-mfc_pc_type", "nosuch"], r"PETSc option -mfc_pc_type nosuch: unknown type"),
    (["-mfc_snes_type", "nosuch"], r"PETSc option -mfc_snes_type nosuch: unknown type"),
    (["-mfc_snes_linesearch_type", "nosuch"], r"-mfc_snes_linesearch_type nosuch: unknown type"),
    (["-mfc_pc_factor_mat_solver_type", "nosuch"], r"-mfc_pc_factor_mat_solver_type nosuch: unknown type"),
    (["-mfc_pc_factor_mat_solver_type", "mkl_pardiso"], r"-mfc_pc_factor_mat_solver_type mkl_pardiso: this PETSc is built without"),
    (["-mfc_level1_ksp_type", "nosuch"], r"-mfc_level1_ksp_type nosuch: unknown type"),
    (["-mfc_mg_levels_pc_type", "nosuch"], r"-mfc_mg_levels_pc_type nosuch: unknown type"),
    (["-mfc_ksp_type"], r"-mfc_ksp_type: needs a value"),
    (["-mfc_snes_max_it", "abc"], r"PETSc option -mfc_snes_max_it abc: not an integer"),
    (["-mfc_snes_max_it", "-3"], r"PETSc option -mfc_snes_max_it -3: must be an integer >= 1"),
    (["-mfc_snes_max_it", "0"], r"PETSc option -mfc_snes_max_it 0: must be an integer >= 1"),
    (["-mfc_snes_max_it", "1.5"], r"PETSc option -mfc_snes_max_it 1\.5: not an integer"),
    (["-mfc_snes_rtol", "-5"], r"PETSc option -mfc_snes_rtol -5: must be a finite number in \[0, 1\)"),
    (["-mfc_snes_rtol", "abc"], r"PETSc option -mfc_snes_rtol abc: not a number"),
    (["-mfc_snes_rtol", "1"], r"PETSc option -mfc_snes_rtol 1: must be a finite number in \[0, 1\)"),
    (["-mfc_snes_atol", "-1e-8"], r"PETSc option -mfc_snes_atol -1e-8: must be a finite number >= 0"),
    (["-mfc_snes_atol", "nan"], r"-mfc_snes_atol nan: (not a number|must be a finite number)"),
    (["-mfc_snes_stol", "inf"], r"-mfc_snes_stol inf: (not a number|must be a finite number)"),
    (["-mfc_ksp_rtol", "-1"], r"-mfc_ksp_rtol -1: must be a finite number in \[0, 1\)"),
    (["-mfc_ksp_max_it", "-1"], r"-mfc_ksp_max_it -1: must be an integer >= 1"),
    (["-mfc_ksp_gmres_restart", "0"], r"-mfc_ksp_gmres_restart 0: must be an integer >= 1"),
    (["-mfc_pc_mg_levels", "x"], r"-mfc_pc_mg_levels x: not an integer"),
    (["-mfc_snes_linesearch_damping", "abc"], r"-mfc_snes_linesearch_damping abc: not a number"),
    (["-mfc_snes_linesearch_damping", "-1"], r"-mfc_snes_linesearch_damping -1: must be a finite number >= 0"),
    (["-mfc_da_processors_x", "3"], r"mesh: PETSc cannot split .* over 1 rank\(s\) .* -mfc_da_processors_x 3"),
    (["-mfc_da_processors_y", "2"], r"mesh: PETSc cannot split .* -mfc_da_processors_y 2"),
    (["-mfc_da_processors_x", "abc"], r"-mfc_da_processors_x abc: not an integer"),
    (["-mfc_da_grid_x", "50"], r"-mfc_da_grid_x 50: the mesh is fixed by the configuration"),
    (["-mfc_da_refine", "1"], r"-mfc_da_refine 1: the mesh is fixed by the configuration"),
    (["-mfc_da_stencil_width", "0"], r"-mfc_da_stencil_width 0: the mesh is fixed"),
    (["-mfc_da_stencil_type", "star"], r"-mfc_da_stencil_type star: the mesh is fixed"),
    (["-mfc_jacobian_preallocation", "nosuch"], r"-mfc_jacobian_preallocation: expected exact or box"),
    (["-mfc_snes_max_funcs", "-1"], r"-mfc_snes_max_funcs -1: must be an integer >= 1"),
    (["-mfc_snes_divergence_tolerance", "abc"], r"-mfc_snes_divergence_tolerance abc: not a number"),
]


@family
def petsc_options(fx: Fixtures) -> Iterator[Case]:
    for opts, needle in PETSC_CASES:
        yield Case(f"petsc/{' '.join(opts)}", "petsc", "petsc", {"options": opts, "config": str(fx.good_toml)}, 2,
                   needle)


# ---------------------------------------------------------------------------- output locations

@family
def outputs(fx: Fixtures) -> Iterator[Case]:
    cfg = fx.good_toml
    yield solve_case(fx, "output/out_empty", "output", cfg, r"--out: the directory name is empty", out="")
    yield solve_case(fx, "output/out_is_a_file", "output", cfg, r"--out: .* exists and is not a directory",
                     out=fx.csv)
    yield solve_case(fx, "output/out_under_a_file", "output", cfg, r"--out: cannot create .*: Not a directory",
                     out=fx.csv / "sub")
    yield solve_case(fx, "output/out_in_proc", "output", cfg, r"--out: (cannot create|.* not writable)",
                     out=Path("/proc/mfc_hpc_out"))
    yield solve_case(fx, "output/checkpoint_dir_is_a_file", "output", cfg,
                     r"--checkpoint-dir: .* exists and is not a directory", out=fx.path("o1"), checkpoint_dir=fx.csv)
    yield solve_case(fx, "output/checkpoint_dir_empty", "output", cfg, r"--checkpoint-dir: the directory name is empty",
                     out=fx.path("o2"), checkpoint_dir="")
    raw = copy.deepcopy(GOOD)
    raw["checkpoint"] = {"directory": "summary.json"}
    out = fx.path("o3")
    out.mkdir()
    (out / "summary.json").write_text("{}")
    yield solve_case(fx, "output/checkpoint_directory_is_a_file", "output", fx.config(raw),
                     r"checkpoint\.directory: .* exists and is not a directory", out=out)
    yield solve_case(fx, "output/restart_missing", "output", cfg, r"--restart: no such file", out=fx.path("o4"),
                     restart=str(fx.root / "none.h5"))
    yield solve_case(fx, "output/restart_directory", "output", cfg, r"--restart: .* is a directory",
                     out=fx.path("o5"), restart=str(fx.root))
    yield solve_case(fx, "output/restart_empty_name", "output", cfg, r"--restart: needs a checkpoint file",
                     out=fx.path("o6"), restart=" ")
    yield solve_case(fx, "output/interpolate_without_restart", "output", cfg,
                     r"--restart-interpolate: needs --restart", out=fx.path("o7"), interpolate=True)
    for key, value, needle in (("every_newton", -1, r"--checkpoint-every-newton: must be >= 0"),
                               ("every_minutes", float("nan"), r"--checkpoint-every-minutes: must be a number >= 0"),
                               ("every_minutes", -1.0, r"--checkpoint-every-minutes: must be a number >= 0"),
                               ("keep", 0, r"--checkpoint-keep: must be >= 1")):
        yield solve_case(fx, f"output/--checkpoint-{key}={value}", "output", cfg, needle, out=fx.path("o8"),
                         overrides={key: value})
    # a live lock: another run (the process generating the corpus, alive while it runs) holds the directory
    locked = fx.path("locked")
    locked.mkdir()
    from mfc_hpc.fileio.lock import LOCK_NAME, owner_info
    info = owner_info("mfc-hpc solve other.toml --out locked")
    info.update(pid=os.getpid(), start_time=_start_time(os.getpid()))
    (locked / LOCK_NAME).write_text(json.dumps(info))
    yield solve_case(fx, "output/locked_by_a_live_run", "output", cfg,
                     r"--out: .* is in use by another run \(host .*, pid \d+", out=locked)
    other = fx.path("locked_other_host")
    other.mkdir()
    info = owner_info("mfc-hpc solve other.toml")
    info.update(host="some-other-node", pid=12345)
    (other / LOCK_NAME).write_text(json.dumps(info))
    yield solve_case(fx, "output/locked_from_another_host", "output", cfg,
                     r"--out: .* is in use by another run \(host some-other-node, pid 12345", out=other)


def _start_time(pid: int) -> str | None:
    from mfc_hpc.fileio.lock import _start_time as st
    return st(pid)


# ---------------------------------------------------------------------------- the command line

def cli_cases(fx: Fixtures) -> list[Case]:
    """A representative subset through the real command line (``mpiexec``): each family,
    the defects the issue lists, and 2-rank cases where a failure must not hang a rank."""
    import h5py  # noqa: F401

    cfg = str(fx.good_toml)
    res = str(fx.results)
    cases: list[Case] = []

    def c(cid, args, needle, code=2, ranks=1, timeout=120.0):
        cases.append(Case(f"cli/{cid}", "cli", "cli", [str(a) for a in args], code, needle, ranks=ranks,
                          timeout=timeout))

    bad_cfg = fx.config(with_(GOOD, ("mesh", "nodes"), -4))
    c("bad_config", ["solve", bad_cfg, "--out", res], r"mesh\.nodes: must be an integer >= 3")
    c("bad_config_2_ranks", ["solve", bad_cfg, "--out", res], r"mesh\.nodes", ranks=2)
    c("missing_config", ["solve", fx.root / "none.toml", "--out", res], r"config: no such file")
    c("extra_positional_before_petsc_option", ["solve", cfg, cfg, "--out", res, "-mfc_snes_monitor"],
      r"unrecognized argument .*good\.toml")
    c("unknown_long_option", ["solve", cfg, "--out", res, "--outdir", "x"], r"unrecognized option --outdir")
    c("unknown_command", ["solvee", cfg], r"invalid choice: 'solvee'")
    c("out_empty", ["solve", cfg, "--out", ""], r"--out: the directory name is empty")
    c("out_is_a_file_2_ranks", ["solve", cfg, "--out", fx.csv], r"--out: .* exists and is not a directory", ranks=2)
    c("checkpoint_dir_is_a_file", ["solve", cfg, "--out", fx.path("o"), "--checkpoint-dir", fx.csv],
      r"--checkpoint-dir: .* exists and is not a directory")
    c("checkpoint_keep_0", ["solve", cfg, "--out", res, "--checkpoint-keep", "0"], r"--checkpoint-keep: must be >= 1")
    for opts, needle in (PETSC_CASES[0], PETSC_CASES[9], PETSC_CASES[13], PETSC_CASES[25], PETSC_CASES[28]):
        c(f"petsc{' '.join(opts)}", ["solve", cfg, "--out", res] + opts, needle)
    c("petsc-mfc_ksp_type_nosuch_2_ranks", ["solve", cfg, "--out", res, "-mfc_ksp_type", "nosuch"],
      r"-mfc_ksp_type nosuch: unknown type", ranks=2)
    c("petsc-mfc_snes_max_it-3_2_ranks", ["solve", cfg, "--out", res, "-mfc_snes_max_it", "-3"],
      r"-mfc_snes_max_it -3: must be an integer >= 1", ranks=2)
    c("options_file_missing", ["solve", cfg, "--out", res, "-options_file", fx.root / "none.opts"],
      r"-options_file: no such file")
    binary = fx.path("binary.opts")
    binary.write_bytes(bytes(range(256)))
    c("options_file_binary", ["solve", cfg, "--out", res, "-options_file", binary],
      r"-options_file: .* is not a text file of PETSc options")
    c("options_file_binary_2_ranks", ["solve", cfg, "--out", res, "-options_file", binary],
      r"-options_file: .* is not a text file", ranks=2)
    c("options_file_without_name", ["solve", cfg, "--out", res, "-options_file"], r"-options_file: needs a file name")
    opts = fx.path("bad.opts")
    opts.write_text("-mfc_snes_max_it abc\n")
    c("options_file_with_bad_value", ["solve", cfg, "--out", res, "-options_file", opts],
      r"-mfc_snes_max_it abc: not an integer")
    grid = fx.config(with_(GOOD, ("solver",), {"process_grid": [2, 1]}))
    c("process_grid_for_2_ranks_on_1", ["solve", grid, "--out", res], r"solver\.process_grid: 2 x 1 = 2 ranks")
    grid3 = fx.config(with_(GOOD, ("solver",), {"process_grid": [3, 1]}))
    c("process_grid_for_3_ranks_on_2", ["solve", grid3, "--out", res], r"solver\.process_grid: 3 x 1 = 3 ranks",
      ranks=2)
    c("nodes_beyond_petscint", ["solve", fx.config(with_(GOOD, ("mesh", "nodes"), 2 ** 40)), "--out", res],
      r"mesh\.nodes: must be an integer <=")
    for key in (("model", "nu"), ("loss", "target")):
        c(f"{'.'.join(key)}_1e300", ["solve", fx.config(with_(GOOD, key, 1e300)), "--out", res],
          rf"{key[0]}\.{key[1]}: must be")
    c("kappa_1e300", ["solve", fx.config(with_(with_(GOOD, ("model", "running"), "congestion"),
                                               ("model", "kappa"), 1e300)), "--out", res], r"model\.kappa: must be")
    c("bandwidth_for_a_gaussian", ["solve", fx.config(with_(GOOD, ("classes", 0, "bandwidth"), 0.2)), "--out", res],
      r"classes\[0\]\.bandwidth: only for samples")
    c("nested_toml", ["solve", fx.config("x = " + "[" * 100000 + "]" * 100000 + "\n"), "--out", res],
      r"config: .*(too deeply|nested deeper|not valid TOML)")
    miss = copy.deepcopy(DATA)
    miss["data"]["file"] = str(fx.csv)
    miss["mesh"].update(x_min=10.0, x_max=20.0)
    c("mesh_misses_the_data", ["solve", fx.config(miss), "--out", res], r"100 % of the samples .* lie outside the mesh")
    c("mesh_misses_the_data_2_ranks", ["solve", fx.config(miss), "--out", res], r"lie outside the mesh", ranks=2)
    huge = fx.path("huge.txt")
    huge.write_text("0.1\n1e308\n-1e308\n")
    raw = copy.deepcopy(GOOD)
    raw["classes"] = [{"samples": str(huge)}]
    c("samples_1e308", ["solve", fx.config(raw), "--out", res], r"magnitude 1e\+308")
    text = fx.path("words.txt")
    text.write_text("a\nb\nc\n")
    raw["classes"] = [{"samples": str(text)}]
    c("samples_not_numeric", ["solve", fx.config(raw), "--out", res], r"classes\[0\]\.samples: cannot read")
    dup = fx.path("dup.csv")
    rows = fx.csv.read_text().splitlines()
    dup.write_text("f1,f1,cls\n" + "\n".join(rows[1:]) + "\n")
    d = copy.deepcopy(DATA)
    d["data"]["file"] = str(dup)
    c("duplicated_csv_header", ["solve", fx.config(d), "--out", res], r"column 'f1' appears twice in the header")
    # checkpoints: --restart and inspect
    flip = fx.path("flip.h5")
    raw_ck = fx.checkpoint.read_bytes()
    _flip(fx.checkpoint, flip, len(raw_ck) // 2, 3)
    shutil.copy(f"{fx.checkpoint}.sum", f"{flip}.sum")
    c("restart_corrupted", ["solve", cfg, "--out", fx.path("r1"), "--restart", flip], r"corrupted file")
    c("restart_corrupted_2_ranks", ["solve", cfg, "--out", fx.path("r2"), "--restart", flip], r"corrupted file", ranks=2)
    bogus = edit_checkpoint(fx.checkpoint, fx.path("bogus.h5"),
                            attrs={"resume": json.dumps({**_resume(fx.checkpoint), "phase": "bogus"})})
    c("restart_phase_bogus", ["solve", cfg, "--out", fx.path("r3"), "--restart", bogus], r"phase = 'bogus'")
    level = edit_checkpoint(fx.checkpoint, fx.path("level.h5"),
                            attrs={"resume": json.dumps({**_resume(fx.checkpoint), "level": 99})})
    c("restart_level_99", ["solve", cfg, "--out", fx.path("r4"), "--restart", level], r"level = 99")
    c("restart_level_99_2_ranks", ["solve", cfg, "--out", fx.path("r5"), "--restart", level], r"level = 99", ranks=2)
    c("restart_missing", ["solve", cfg, "--out", fx.path("r6"), "--restart", fx.root / "none.h5"],
      r"--restart: no such file")
    c("inspect_corrupted", ["inspect", flip], r"corrupted file")
    c("inspect_corrupted_2_ranks", ["inspect", flip], r"corrupted file", ranks=2)
    c("inspect_bogus_phase", ["inspect", bogus], r"phase = 'bogus'")
    c("inspect_text", ["inspect", fx.csv], r"foreign file: not HDF5")
    trunc = fx.path("trunc_solution.h5")
    trunc.write_bytes(fx.solution.read_bytes()[:2000])
    c("inspect_truncated_solution_no_sidecar", ["inspect", trunc], r"damaged HDF5 file|truncated")
    shutil.copy(f"{fx.solution}.sum", f"{trunc}.sum")
    trunc2 = fx.path("trunc_solution.h5")
    trunc2.write_bytes(fx.solution.read_bytes()[:2000])
    shutil.copy(f"{fx.solution}.sum", f"{trunc2}.sum")
    c("inspect_truncated_solution", ["inspect", trunc2], r"truncated or extended file")
    v1 = make_v1_checkpoint(fx.checkpoint, fx.path("v1.h5"))
    hang = fx.path("v1_gcol.h5")
    if refused_gcol_flip(v1, hang):
        c("inspect_v1_gcol_flip", ["inspect", hang], r"damaged|corrupted|checksum|foreign", timeout=120.0)
        c("restart_v1_gcol_flip", ["solve", cfg, "--out", fx.path("r7"), "--restart", hang],
          r"damaged|corrupted|checksum|foreign", timeout=120.0)
    c("restart_interpolate_without_restart", ["solve", cfg, "--out", fx.path("r8"), "--restart-interpolate"],
      r"--restart-interpolate: needs --restart")
    # the learning commands: train and transport share solve's input boundary
    data_cfg = copy.deepcopy(DATA)
    data_cfg["data"]["file"] = str(fx.csv)
    data_cfg = fx.config(data_cfg)
    c("train_without_data", ["train", cfg, "--out", fx.path("t1")], r"has no \[data\] section")
    c("train_bad_config_2_ranks", ["train", bad_cfg, "--out", fx.path("t2")], r"mesh\.nodes", ranks=2)
    c("train_out_is_a_file_2_ranks", ["train", data_cfg, "--out", fx.csv], r"--out: .* exists and is not a directory",
      ranks=2)
    c("train_samples_0", ["train", data_cfg, "--out", fx.path("t3"), "--samples", "0"], r"--samples >= 2")
    no_test = copy.deepcopy(DATA)
    no_test["data"].update(file=str(fx.csv), test_fraction=0.0)
    c("train_test_fraction_0", ["train", fx.config(no_test), "--out", fx.path("t5")],
      r"data\.test_fraction = 0 leaves no held-out samples")
    c("transport_classification_loss", ["transport", cfg, "--out", fx.path("t4")], r"transport needs kind = 'kl' or 'bridge'")
    m = make_models(fx)
    hdr = fx.path("header_only.csv")
    hdr.write_text("f1,f2,cls\n")
    sel = ["--feature", "f1,f2", "--label", "cls"]
    c("predict_header_only", ["predict", m["npz"], hdr] + sel, r"has a header but no samples")
    c("predict_json_dir", ["predict", m["npz"], fx.csv, "--json", fx.root] + sel, r"--json: .* is a directory")
    trunc = fx.path("model.npz")
    trunc.write_bytes(m["npz"].read_bytes()[:2000])
    c("predict_truncated_npz", ["predict", trunc, fx.csv] + sel, r"not a readable NPZ model")
    raw_onnx = m["onnx"].read_bytes()
    bad_onnx = fx.path("model.onnx")
    bad_onnx.write_bytes(raw_onnx[: len(raw_onnx) // 2] + bytes([raw_onnx[len(raw_onnx) // 2] ^ 0x10])
                         + raw_onnx[len(raw_onnx) // 2 + 1:])
    c("predict_flipped_onnx", ["predict", bad_onnx, fx.csv] + sel,
      r"model: .*(not a readable ONNX model|checksum mismatch)")
    c("predict_missing_model", ["predict", fx.root / "none.npz", fx.csv] + sel, r"model: no such file")
    c("data_samples_2", ["data", "moons", "--out", fx.path("m.csv"), "--samples", "2"], r"--samples must be >= 4")
    c("data_out_is_a_directory", ["data", "moons", "--out", fx.root], r"--out: .* is a directory")
    return cases


def refused_gcol_flip(v1: Path, dst: Path) -> bool:
    """Write to ``dst`` the first global-heap size flip of ``v1`` that the child reader
    refuses (a hang, a crash or an HDF5 error); ``False`` if none is."""
    from mfc_hpc.errors import BadInput
    from mfc_hpc.fileio.hdf5 import read_in_child

    for off, bit in gcol_size_flips(v1)[2:]:
        _flip(v1, dst, off, bit)
        try:
            read_in_child(dst, timeout=3.0)
        except BadInput:
            return True
    return False


def _resume(path: Path) -> dict:
    import h5py
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["resume"])


def make_corpus(root: Path) -> tuple[Fixtures, list[Case]]:
    """The fixtures and every case of every family (the in-process ones; the command-line
    subset is :func:`cli_cases`)."""
    fx = make_fixtures(root)
    cases = [c for fam in FAMILIES for c in fam(fx)]
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise AssertionError(f"duplicate case ids: {sorted(dup)[:5]}")
    return fx, cases


# ---------------------------------------------------------------------------- routes (in process)

def _comm():
    from mpi4py import MPI
    return MPI.COMM_SELF


def route_solve_inputs(case: Case, fx: dict) -> Any:
    from mfc_hpc.jobs.inputs import CheckpointOverrides, check_solve_inputs

    a = case.args
    ov = dict(a.get("overrides", {}))
    if "checkpoint_dir" in a:
        ov["directory"] = a["checkpoint_dir"]
    inputs = check_solve_inputs(a["config"], a["out"], _comm(), CheckpointOverrides(**ov), restart=a.get("restart"),
                                interpolate=bool(a.get("interpolate")))
    inputs.release()
    return "passed the boundary"


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def route_petsc(case: Case, fx: dict) -> Any:
    from petsc4py import PETSc

    from mfc_hpc.config import load_config
    from mfc_hpc.drivers.run import build_solver
    from mfc_hpc.jobs.inputs import check_options
    from mfc_hpc.problem.build import build_problem

    opts = PETSc.Options()
    names = []
    args = list(case.args["options"])
    i = 0
    while i < len(args):
        name = args[i].lstrip("-")
        nxt = args[i + 1] if i + 1 < len(args) else None
        value = nxt if nxt is not None and (not nxt.startswith("-") or _is_number(nxt)) else None
        i += 2 if value is not None else 1
        opts.setValue(name, value)
        names.append(name)
    try:
        check_options(_comm())
        problem = build_problem(load_config(case.args["config"]))
        ms = build_solver(problem, PETSc.COMM_SELF, verbose=False)
        ms.destroy()
    finally:
        for n in names:
            opts.delValue(n)
    return "built a solver"


def route_checkpoint(case: Case, fx: dict) -> Any:
    from mfc_hpc.fileio.checkpoint import probe, verify

    hdr = probe(case.args["path"])
    verify(case.args["path"], _comm(), hdr)
    return _fingerprint_checkpoint(case.args["path"], hdr)


def _fingerprint_checkpoint(path: str, hdr: dict) -> str:
    import h5py

    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()].tobytes() for k in ("rho", "phi", "t")}
    keep = {k: hdr[k] for k in ("mesh", "config", "resume", "versions", "checksums", "process_grid", "reason",
                                "sequence", "ranks", "created")}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    for k in sorted(arrays):
        h.update(arrays[k])
    return h.hexdigest()


def route_solution(case: Case, fx: dict) -> Any:
    import numpy as np

    from mfc_hpc.fileio.solution import read_solution

    s = read_solution(case.args["path"])
    h = hashlib.sha256(json.dumps(s["attrs"], sort_keys=True, default=str).encode())
    for k in ("rho", "phi", "t"):
        h.update(np.ascontiguousarray(s[k]).tobytes())
    return h.hexdigest()


def route_predict(case: Case, fx: dict) -> Any:
    """What ``mfc-hpc predict MODEL DATA`` computes before printing: its report (the
    fingerprint of an accepted file), after the checks of ``--json``."""
    from mfc_hpc.cli.commands.predict import _check_json_target, predict_table

    a = case.args
    if "json" in a:
        _check_json_target(a["json"])
    a = dict(_model_args(a["path"]), **a)
    rep = predict_table(a["path"], a["data"], label=a.get("label", "cls"), feature=a["feature"],
                        noise=bool(a.get("noise")), seed=0)
    rep.pop("data")
    rep.pop("model")
    return hashlib.sha256(json.dumps(rep, sort_keys=True).encode()).hexdigest()


ROUTES: dict[str, Callable[[Case, dict], Any]] = {
    "solve-inputs": route_solve_inputs,
    "petsc": route_petsc,
    "checkpoint": route_checkpoint,
    "solution": route_solution,
    "predict": route_predict,
}


def run_case(case: Case, fx: dict) -> dict:
    """Run one case in this process: ``code`` 0 (accepted), 2 (BadInput), 74
    (OutputError) or 1 (any other exception: a traceback in the command line)."""
    from mfc_hpc.errors import EXIT_BAD_INPUT, EXIT_IO, BadInput, OutputError

    t = time.perf_counter()
    out = {"id": case.id, "code": 0, "message": "", "result": None}
    try:
        out["result"] = ROUTES[case.route](case, fx)
    except BadInput as e:
        out.update(code=EXIT_BAD_INPUT, message=str(e))
    except OutputError as e:
        out.update(code=EXIT_IO, message=str(e))
    except Exception as e:  # noqa: BLE001 - what the command line would show as a traceback
        out.update(code=1, message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
    out["seconds"] = time.perf_counter() - t
    return out


def good_fingerprints(fx: dict, cases: list[Case] = ()) -> dict:
    """What the good checkpoint and solution (and every ``same_as`` file) read as, for
    corruptions that may pass."""
    good_ck = Case("good", "checkpoint", "checkpoint", {"path": fx["checkpoint"]}, 0)
    good_sol = Case("good", "solution", "solution", {"path": fx["solution"]}, 0)
    out = {"checkpoint": run_case(good_ck, fx)["result"], "solution": run_case(good_sol, fx)["result"]}
    for c in cases:
        if c.same_as and c.same_as not in out:
            out[c.same_as] = run_case(Case("good", c.category, c.route, {"path": c.same_as}, 0), fx)["result"]
    return out


def runner(cases_json: str, results: str) -> None:
    """Execute the cases of ``cases_json`` (``{"fixtures": .., "cases": [..]}``) in order,
    appending ``{"start": id}`` and then the result of each to ``results``; after each case
    the protected files are hashed again (a changed one is reported with the case)."""
    os.environ.setdefault("H5PY_ALWAYS_USE_MPI", "1")
    import petsc4py
    petsc4py.init([])
    data = json.loads(Path(cases_json).read_text())
    fx = data["fixtures"]
    protected = [Path(p) for p in fx["protected"]]
    before = digest_tree(protected)
    with open(results, "a") as out:
        for c in data["cases"]:
            case = Case(**c)
            out.write(json.dumps({"start": case.id}) + "\n")
            out.flush()
            r = run_case(case, fx)
            after = digest_tree(protected)
            r["changed"] = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            before = after
            out.write(json.dumps(r) + "\n")
            out.flush()


def check_result(case: Case, r: dict | None, good: dict) -> str | None:
    """Why the result ``r`` of an in-process case is wrong (``None`` if it is right): the
    documented exit status, one line naming the problem (the case's pattern), no
    traceback, within the time limit, no protected file changed; a corruption that may
    hit unread bytes is accepted only if what is read equals the good file."""
    import re

    if r is None:
        return "no result (the runner died)"
    if r.get("hung"):
        return f"hung: no result within {case.timeout:g} s"
    if r.get("changed"):
        return f"changed good files: {r['changed'][:3]}"
    if r["seconds"] > case.timeout:
        return f"took {r['seconds']:.1f} s (limit {case.timeout:g} s)"
    if case.may_pass and r["code"] == 0:
        want = good.get(case.same_as) if case.same_as else good.get(case.route)
        if r["result"] != want:
            return "accepted a damaged file whose content differs from the good one"
        return None
    if r["code"] != case.code:
        return f"exit {r['code']} instead of {case.code}: {r['message'][:300]}"
    if case.code:
        msg = r["message"]
        if "\n" in msg or "Traceback" in msg:
            return f"not one line: {msg[:300]!r}"
        if not re.search(case.needle, msg):
            return f"message does not match {case.needle!r}: {msg[:300]}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "run":
        runner(argv[1], argv[2])
        return 0
    if len(argv) >= 2 and argv[0] == "make":
        os.environ.setdefault("H5PY_ALWAYS_USE_MPI", "1")
        import petsc4py
        petsc4py.init([])
        fx, cases = make_corpus(Path(argv[1]))
        cli = cli_cases(fx)
        by = {}
        for c in cases + cli:
            by[(c.category, c.route)] = by.get((c.category, c.route), 0) + 1
        for (cat, route), n in sorted(by.items()):
            print(f"{cat:12s} {route:14s} {n:4d}")
        print(f"{'all':12s} {'':14s} {len(cases) + len(cli):4d}")
        Path(argv[1], "cases.json").write_text(json.dumps({"fixtures": fx.to_json(),
                                                           "cases": [c.to_json() for c in cases + cli]}, indent=1))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
