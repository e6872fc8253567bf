"""The package's layers, read from its import graph (every ``import`` statement, also the
ones inside functions): no cycles; the numerics import no PETSc, MPI or h5py; nothing
imports the command line; each layer imports only the layers below it."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mfc_hpc"

#: layer -> the layers (and top-level modules) it may import
ALLOWED = {
    "errors": set(),
    "numerics": set(),
    "config": {"errors", "numerics"},
    "problem": {"errors", "config", "numerics"},
    "parallel": {"errors", "numerics"},
    "drivers": {"errors", "config", "numerics", "problem", "parallel"},
    "fileio": {"errors", "config", "numerics", "parallel", "drivers", "__init__"},
    "jobs": {"errors", "config", "numerics", "problem", "parallel", "drivers", "fileio"},
    "learning": {"errors", "config", "numerics", "problem", "parallel", "drivers", "fileio", "jobs"},
    "studies": {"errors", "config", "numerics", "problem", "parallel", "drivers", "fileio", "jobs", "learning"},
    "cli": {"errors", "config", "numerics", "problem", "parallel", "drivers", "fileio", "jobs", "learning",
            "studies", "logs"},
    "logs": set(),
    "__init__": set(),
    "__main__": {"cli"},
}
FORBIDDEN_IN_NUMERICS = ("petsc4py", "mpi4py", "h5py", "matplotlib")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    me = module_name(path).split(".")
    pkg = me if path.name == "__init__.py" else me[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x: x may be a module
                    out += [f"{mod}.{a.name}" for a in node.names]
                    continue
            else:
                mod = node.module
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    g = {}
    for m, p in mods.items():
        g[m] = {i for i in imports(p) if i in mods and i != m}
    return g


def layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                cyc = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cyc))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_numerics_import_no_parallel_or_io():
    for p in (PKG / "numerics").rglob("*.py"):
        bad = [i for i in imports(p) if i.split(".")[0] in FORBIDDEN_IN_NUMERICS]
        assert not bad, f"{p.name} imports {bad}"


def test_nothing_imports_the_command_line_and_layers_point_down():
    g = graph()
    for m, deps in g.items():
        lm = layer(m)
        for n in deps:
            ln = layer(n)
            if ln == lm:
                continue
            assert ln != "cli" or m == "mfc_hpc.__main__", f"{m} imports the command line ({n})"
            assert ln in ALLOWED[lm], f"{m} (layer {lm}) imports {n} (layer {ln})"


def test_the_graph_is_read():
    """The reader sees the real edges (a check that this test can fail)."""
    g = graph()
    assert "mfc_hpc.numerics.walk" in g["mfc_hpc.numerics.depth"]
    assert "mfc_hpc.parallel.mesh" in g["mfc_hpc.parallel.snes"]
    bad = PKG / "numerics" / "_layer_probe.py"
    try:
        bad.write_text("from petsc4py import PETSc\n")
        try:
            test_numerics_import_no_parallel_or_io()
        except AssertionError:
            pass
        else:
            raise AssertionError("a numerics module importing petsc4py went unnoticed")
    finally:
        bad.unlink()
