"""The sections of a configuration: frozen dataclasses whose defaults are written once
(the field defaults; ``parse`` reads them from there) and whose ``parse`` validates a TOML
table. The state dimension ``d`` is decided by :mod:`mfc_hpc.config.load` and passed in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from . import checks as ck

__all__ = ["MeshConfig", "ModelConfig", "ClassConfig", "LossConfig", "SolverConfig", "CheckpointConfig",
           "DataConfig", "LOSSES", "TRANSPORT_LOSSES", "FIXED_LOSSES", "LINEAR_SOLVERS", "CONTINUATION",
           "GUESSES", "PROJECTIONS", "BANDWIDTH_RULES", "HEADS", "SHIPPED", "SYNTHETIC",
           "resolve_data_path"]

#: the loss kinds; the fixed ones have a terminal ``phi^N = -G`` (the training problem)
FIXED_LOSSES = ("quadratic", "softmax")
TRANSPORT_LOSSES = ("kl", "bridge")
LOSSES = FIXED_LOSSES + TRANSPORT_LOSSES
LINEAR_SOLVERS = ("auto", "direct", "multigrid")
CONTINUATION = ("auto", "always", "never")
GUESSES = ("uncontrolled", "optimisation")
STEP_CAPS = ("auto", "bulk", "total", "classes")
PROJECTIONS = ("none", "pca", "lda")
BANDWIDTH_RULES = ("silverman", "scott")
HEADS = ("targets", "fitted")
#: data sets shipped as files in ``mfc_hpc/data`` (``data.file = "builtin:NAME"``)
SHIPPED = {"iris": "iris.csv"}
#: data sets the package makes itself, seeded (:mod:`mfc_hpc.problem.synthetic`)
SYNTHETIC = ("moons", "spirals")


def resolve_data_path(file: str, base: Path | str = ".") -> Path:
    """``builtin:NAME`` -> the shipped file; a relative path is taken from ``base`` (the
    configuration's folder). Synthetic sets have no file: see :data:`SYNTHETIC`."""
    if file.startswith("builtin:"):
        name = file.split(":", 1)[1]
        if name in SHIPPED:
            return Path(__file__).resolve().parents[1] / "data" / SHIPPED[name]
        raise ConfigError(f"data.file: no shipped data set {name!r} (shipped: "
                          f"{', '.join(list(SHIPPED) + list(SYNTHETIC))})")
    if not file.strip():
        raise ConfigError("data.file: must name a file, got an empty string")
    p = Path(file)
    return p if p.is_absolute() else Path(base) / p


def _defaults(cls) -> Any:
    return cls()


def _scalar_or_list(v: tuple, ndim: int):
    """How a per-axis value is written back: a scalar for ``d = 1``, a list otherwise."""
    return v[0] if ndim == 1 else list(v)


# ---------------------------------------------------------------------------- mesh

@dataclass(frozen=True)
class MeshConfig:
    """``[mesh]``: the state box ``prod_k [x_min_k, x_max_k]``, ``nodes`` per axis, ``layers``
    N and ``depth`` T. Scalars (``d = 1``) or lists of length ``d``; a scalar next to a
    list applies to every axis. ``x_min = x_max = None``: chosen from the data (only with
    a ``[data]`` section)."""

    x_min: tuple[float, ...] | None = (-3.0,)
    x_max: tuple[float, ...] | None = (3.0,)
    nodes: tuple[int, ...] = (65,)
    layers: int = 16
    depth: float = 1.0

    @property
    def ndim(self) -> int:
        return len(self.nodes)

    @staticmethod
    def dims_of(v: dict) -> int | None:
        """The state dimension the table's lists give (``None``: only scalars)."""
        lens = {len(v[k]) for k in ("x_min", "x_max", "nodes") if isinstance(v.get(k), (list, tuple))}
        if len(lens) > 1:
            raise ConfigError(f"mesh: x_min, x_max and nodes give different numbers of state axes {sorted(lens)}")
        return lens.pop() if lens else None

    @classmethod
    def parse(cls, v: dict, ndim: int, bounds_from_data: bool = False) -> "MeshConfig":
        v = ck.table("mesh", v, {f.name for f in dataclasses.fields(cls)})
        dflt = _defaults(cls)

        def per_axis(key: str, default, conv):
            x = v.get(key, default)
            if isinstance(x, (list, tuple)):
                if len(x) != ndim:
                    raise ConfigError(f"mesh.{key}: needs {ndim} entries (one per state axis), got {len(x)}")
                return tuple(conv(f"mesh.{key}[{i}]", a) for i, a in enumerate(x))
            return (conv(f"mesh.{key}", x),) * ndim

        nodes = per_axis("nodes", dflt.nodes[0], lambda k, a: ck.integer(k, a, lo=3, hi=1 << 24))
        has_bounds = "x_min" in v or "x_max" in v
        if bounds_from_data and not has_bounds:
            x_min = x_max = None
        else:
            if bounds_from_data and ("x_min" in v) != ("x_max" in v):
                raise ConfigError("mesh.x_min: give both x_min and x_max, or neither (chosen from the data)")
            x_min = per_axis("x_min", dflt.x_min[0], ck.num)
            x_max = per_axis("x_max", dflt.x_max[0], ck.num)
            for k, (a, b) in enumerate(zip(x_min, x_max)):
                if b <= a:
                    key = "mesh.x_max" if ndim == 1 else f"mesh.x_max[{k}]"
                    raise ConfigError(f"{key}: must exceed mesh.x_min ({a:g}), got {b:g}")
                if not np.isfinite(b - a):
                    raise ConfigError(f"mesh.x_max: the interval [{a:g}, {b:g}] is too long")
        layers = ck.integer("mesh.layers", v.get("layers", dflt.layers), lo=1, hi=1 << 24)
        unknowns = float(np.prod(nodes, dtype=float)) * (layers + 1)
        if unknowns * 2 > ck.MAX_INT:
            raise ConfigError(f"mesh.nodes: {' x '.join(map(str, nodes))} nodes and {layers} layers are "
                              f"{2 * unknowns:.3g} unknowns per class, beyond PETSc's index space (2^31)")
        return cls(x_min=x_min, x_max=x_max, nodes=nodes, layers=layers,
                   depth=ck.num("mesh.depth", v.get("depth", dflt.depth), lo=0.0, lo_open=True, hi=1e6))

    def to_dict(self) -> dict:
        n = self.ndim
        return {"x_min": None if self.x_min is None else _scalar_or_list(self.x_min, n),
                "x_max": None if self.x_max is None else _scalar_or_list(self.x_max, n),
                "nodes": _scalar_or_list(self.nodes, n), "layers": self.layers, "depth": self.depth}


# ---------------------------------------------------------------------------- model

@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: noise ``nu > 0``, weight decay ``eta >= 0``, running cost, scheme.

    ``running = "none"`` or ``"congestion"`` (``F = kappa/2 rho^2``); ``floor`` is the
    fraction of each class's mass mixed in as a uniform background (default 0 for one
    class, 1e-3 for several, METHOD.md section 7); ``scheme`` is ``midpoint``
    (symplectic, default) or ``euler`` (the non-symplectic comparison).
    """

    nu: float = 0.1
    eta: float = 0.0
    running: str = "none"
    kappa: float = 0.0
    floor: float | None = None
    scheme: str = "midpoint"

    @classmethod
    def parse(cls, v: dict) -> "ModelConfig":
        from ..numerics.model import RUNNING_COSTS, SCHEMES

        v = ck.table("model", v, {f.name for f in dataclasses.fields(cls)})
        dflt = _defaults(cls)
        floor = v.get("floor")
        out = cls(
            nu=ck.num("model.nu", v.get("nu", dflt.nu), lo=0.0, lo_open=True, hi=1e6),
            eta=ck.num("model.eta", v.get("eta", dflt.eta), lo=0.0, hi=1e6),
            running=ck.string("model.running", v.get("running", dflt.running), RUNNING_COSTS),
            kappa=ck.num("model.kappa", v.get("kappa", dflt.kappa), lo=0.0, hi=1e6),
            floor=None if floor is None else ck.num("model.floor", floor, lo=0.0, hi=0.5),
            scheme=ck.string("model.scheme", v.get("scheme", dflt.scheme), tuple(SCHEMES)),
        )
        if out.running == "congestion" and "kappa" not in v:
            raise ConfigError("model.kappa: required when model.running = 'congestion'")
        return out


# ---------------------------------------------------------------------------- classes

@dataclass(frozen=True)
class ClassConfig:
    """``[[classes]]``: a ``prior`` and the data: Gaussian ``mean``/``var`` or ``samples``.

    ``mean`` has one entry per state axis; ``var`` is a number (isotropic), a list (per
    axis) or a ``d x d`` covariance. ``samples`` is a file of ``d`` columns (``.npy``,
    ``.txt``/``.csv``) turned into a density by a Gaussian kernel of width ``bandwidth``
    (a number or one per axis; default: Silverman's rule).
    """

    prior: float = 1.0
    mean: tuple[float, ...] | None = None
    var: Any = None
    samples: str | None = None
    bandwidth: tuple[float, ...] | None = None
    name: str | None = None

    @classmethod
    def parse(cls, v: Any, key: str, base: Path, ndim: int, with_prior: bool = True) -> "ClassConfig":
        allowed = {"mean", "var", "samples", "bandwidth"} | ({"prior", "name"} if with_prior else set())
        v = ck.table(key, v, allowed)
        has_g = "mean" in v or "var" in v
        has_s = "samples" in v
        if has_g == has_s:
            raise ConfigError(f"{key}: give either mean and var (Gaussian) or samples (a file)")
        if has_g and not ("mean" in v and "var" in v):
            raise ConfigError(f"{key}: a Gaussian {'class' if with_prior else 'target'} needs both mean and var")
        if "bandwidth" in v and not has_s:
            raise ConfigError(f"{key}.bandwidth: only for samples (a Gaussian has its variance)")
        var = None
        if has_g:
            C = ck.covariance(f"{key}.var", v["var"], ndim)
            var = _var_as_given(v["var"], C, ndim)
        return cls(
            prior=ck.num(f"{key}.prior", v.get("prior", 1.0), lo=0.0, lo_open=True, hi=1e12),
            mean=None if "mean" not in v else ck.vector(f"{key}.mean", v["mean"], ndim),
            var=var,
            samples=ck.data_file(f"{key}.samples", v["samples"], base) if has_s else None,
            bandwidth=None if "bandwidth" not in v else ck.vector(f"{key}.bandwidth", v["bandwidth"], ndim,
                                                                  lo=0.0, lo_open=True),
            name=None if "name" not in v else ck.string(f"{key}.name", v["name"]),
        )

    def covariance(self, ndim: int) -> np.ndarray:
        """The Gaussian's covariance matrix ``d x d``."""
        return ck.covariance("var", _var_raw(self.var), ndim)

    def to_dict(self, ndim: int) -> dict:
        out = {"prior": self.prior, "name": self.name, "samples": self.samples,
               "mean": None if self.mean is None else _scalar_or_list(self.mean, ndim),
               "var": _var_raw(self.var),
               "bandwidth": None if self.bandwidth is None else _scalar_or_list(self.bandwidth, ndim)}
        return out


def _var_as_given(raw: Any, C: np.ndarray, ndim: int) -> Any:
    """``var`` kept in the form given (hashable): a number, a tuple or a tuple of tuples."""
    if isinstance(raw, (list, tuple)) and raw and all(isinstance(r, (list, tuple)) for r in raw):
        return tuple(tuple(float(a) for a in r) for r in C)
    if isinstance(raw, (list, tuple)):
        return tuple(float(a) for a in np.diag(C))
    return float(raw)


def _var_raw(var: Any) -> Any:
    if isinstance(var, tuple):
        return [list(r) if isinstance(r, tuple) else r for r in var]
    return var


# ---------------------------------------------------------------------------- loss

@dataclass(frozen=True)
class LossConfig:
    """``[loss]``: the read-out loss ``G_c`` at depth T.

    ``kind = "quadratic"``: ``G = alpha/2 |x - target|^2`` (all classes; ``target`` one
    entry per state axis); ``kind = "softmax"``: ``G_c = gamma * CE_c`` with logits
    ``weights[c] . x + biases[c]`` (``weights`` a ``K x d`` list, or a list of ``K``
    numbers when ``d = 1``); ``kind = "kl"``: transport, ``gamma * KL(rho_c(T) | q_c)``;
    ``kind = "bridge"``: the Schroedinger bridge ``rho(T) = q`` (one class). The target
    density ``q`` is ``target = {mean, var}`` or ``{samples, bandwidth}`` (one shared, scaled
    to each prior) or ``[[loss.targets]]`` (one per class), mixed with a uniform ``floor``
    (fraction of the mass, default 1e-4) and normalised to the class priors.
    """

    kind: str = "quadratic"
    alpha: float = 1.0
    target: tuple[float, ...] = (0.0,)
    weights: tuple[tuple[float, ...], ...] = ()
    biases: tuple[float, ...] = ()
    gamma: float = 1.0
    targets: tuple[ClassConfig, ...] = ()
    floor: float = 1e-4

    @classmethod
    def parse(cls, v: dict, K: int | None, ndim: int, base: Path | str = ".") -> "LossConfig":
        v = ck.table("loss", v, ({f.name for f in dataclasses.fields(cls)} | {"targets"}))
        dflt = _defaults(cls)
        kind = ck.string("loss.kind", v.get("kind", dflt.kind), LOSSES)
        if kind in TRANSPORT_LOSSES:
            return cls._parse_transport(kind, v, K, ndim, Path(base))
        extra = {"targets", "floor"} & set(v)
        if extra:
            raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the {kind} loss (only of kl and bridge)")
        if kind == "quadratic":
            extra = {"weights", "biases", "gamma"} & set(v)
            if extra:
                raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the quadratic loss")
            return cls(kind=kind, alpha=ck.num("loss.alpha", v.get("alpha", dflt.alpha), lo=0.0, lo_open=True,
                                               hi=1e8),
                       target=ck.vector("loss.target", v.get("target", 0.0), ndim))
        extra = {"alpha", "target"} & set(v)
        if extra:
            raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the softmax loss")
        if "weights" not in v:
            raise ConfigError("loss.weights: required for the softmax loss (one per class)")
        raw = v["weights"]
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"loss.weights: must be a list, got {raw!r}")
        if K is not None and len(raw) != K:
            raise ConfigError(f"loss.weights: needs one weight per class ({K}), got {len(raw)}")
        wts = ck.matrix("loss.weights", raw, len(raw), ndim)
        if any(abs(a) > 1e8 for r in wts for a in r):
            raise ConfigError("loss.weights: entries must be of magnitude below 1e8")
        bss = ck.nums("loss.biases", v.get("biases", [0.0] * len(wts)))
        if len(bss) != len(wts):
            raise ConfigError(f"loss.biases: needs one bias per class ({len(wts)}), got {len(bss)}")
        if len(wts) < 2:
            raise ConfigError(f"loss.weights: the soft-max head needs at least two classes, got {len(wts)}")
        if any(abs(b) > 1e8 for b in bss):
            raise ConfigError("loss.biases: entries must be of magnitude below 1e8")
        return cls(kind=kind, weights=wts, biases=bss,
                   gamma=ck.num("loss.gamma", v.get("gamma", dflt.gamma), lo=0.0, lo_open=True, hi=1e8))

    @classmethod
    def _parse_transport(cls, kind: str, v: dict, K: int | None, ndim: int, base: Path) -> "LossConfig":
        extra = {"alpha", "weights", "biases"} & set(v)
        if kind == "bridge":
            extra |= {"gamma"} & set(v)
        if extra:
            raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the {kind} loss")
        if ("target" in v) == ("targets" in v):
            raise ConfigError(f"loss.target: the {kind} loss needs a target density: a table target = "
                              "{mean = .., var = ..} or {samples = ..}, or one [[loss.targets]] per class")
        if "target" in v:
            targets = (ClassConfig.parse(v["target"], "loss.target", base, ndim, with_prior=False),)
        else:
            raw = v["targets"]
            if not isinstance(raw, list) or not raw:
                raise ConfigError(f"loss.targets: must be a non-empty array of tables, got {raw!r}")
            if K is not None and len(raw) != K:
                raise ConfigError(f"loss.targets: needs one target per class ({K}), got {len(raw)}")
            targets = tuple(ClassConfig.parse(t, f"loss.targets[{k}]", base, ndim, with_prior=False)
                            for k, t in enumerate(raw))
        if kind == "bridge" and K is not None and K != 1:
            raise ConfigError(f"loss.kind: the bridge needs exactly one class (a shared control cannot steer "
                              f"{K} class densities onto independent targets); use kind = 'kl'")
        return cls(kind=kind, gamma=ck.num("loss.gamma", v.get("gamma", 1.0), lo=0.0, lo_open=True, hi=1e8),
                   targets=targets, floor=ck.num("loss.floor", v.get("floor", 1e-4), lo=0.0, hi=0.5),
                   target=())

    def to_dict(self, ndim: int) -> dict:
        out: dict = {"kind": self.kind}
        if self.kind == "quadratic":
            out.update(alpha=self.alpha, target=_scalar_or_list(self.target, ndim))
        elif self.kind == "softmax":
            out.update(weights=[w[0] if ndim == 1 else list(w) for w in self.weights],
                       biases=list(self.biases), gamma=self.gamma)
        else:
            out.update(gamma=self.gamma, floor=self.floor, targets=[t.to_dict(ndim) for t in self.targets])
        return out


# ---------------------------------------------------------------------------- solver

@dataclass(frozen=True)
class SolverConfig:
    """``[solver]``: Newton tolerances, continuation, grid sequencing, process grid.

    ``rtol``/``atol``/``stol``: SNES tolerances (rows scale with the cell volume, so
    ``atol`` is relative to the norm of the boundary data); ``max_it`` Newton steps per
    solve; ``continuation``: continue in the loss weight (``loss_steps`` initial stages,
    adaptive with a tangent predictor) when plain Newton fails, ``"always"``, or
    ``"never"``; ``nu_start``: start a continuation in ``nu`` from this noise level
    (geometric steps down to ``model.nu``); ``grid_levels``: coarse meshes solved first;
    ``process_grid``: ranks along each state axis and along depth (``d + 1`` entries;
    0 = let PETSc choose); ``positivity``: fraction of the distance to zero a Newton step
    may go, for what ``step_cap`` protects (:func:`mfc_hpc.numerics.reference.step_cap`):
    ``"bulk"`` ``R = sum_c rho_c + eta`` everywhere and every class density above 1e-8 of
    its maximum (far tails may cross zero, as the exact discrete density does in METHOD.md
    8), ``"total"`` ``R`` alone, ``"classes"`` every positive class density (the 1-D
    releases' rule), ``"auto"`` (default): ``classes`` in 1-D, ``bulk`` in 2-D
    (:func:`mfc_hpc.drivers.run.step_cap_rule` says why); ``guess``: ``"uncontrolled"`` or ``"optimisation"`` (the
    minimiser of the discrete training problem at the full loss weight);
    ``optimisation_fallback``: when continuation stalls (a fold), start Newton again from
    that minimiser (not with ``continuation = "never"``); ``optimisation_maxiter`` and
    ``optimisation_chunk``: its iterations in all and between Newton attempts;
    ``optimisation_perturbation``: the minimiser starts from the zero network plus a fixed
    pseudo-random perturbation of at most this size in every log-tilt, the same for every
    rank count (a symmetric problem's zero network lies on its symmetric subspace, which
    only round-off would otherwise leave; 0 = none);
    ``linear``: ``"direct"`` (MUMPS LU), ``"multigrid"`` (FGMRES + geometric multigrid on
    the DMDA hierarchy, falls back to LU if a linear solve fails) or ``"auto"`` (by size:
    :func:`mfc_hpc.parallel.linear.choose_linear`); ``-mfc_ksp_type``/``-mfc_pc_type``
    override all three.
    """

    rtol: float = 1e-10
    atol: float = 1e-11
    stol: float = 1e-14
    max_it: int = 30
    continuation: str = "auto"
    loss_steps: int = 4
    min_step: float = 1e-3
    max_stages: int = 200
    nu_start: float | None = None
    grid_levels: int = 0
    process_grid: tuple[int, ...] = (0, 0)
    positivity: float = 0.9
    step_cap: str = "auto"
    guess: str = "uncontrolled"
    optimisation_fallback: bool = True
    optimisation_maxiter: int = 10000
    optimisation_chunk: int = 1000
    optimisation_perturbation: float = 1e-4
    linear: str = "auto"

    @classmethod
    def parse(cls, v: dict, ndim: int) -> "SolverConfig":
        v = ck.table("solver", v, {f.name for f in dataclasses.fields(cls)})
        d = _defaults(cls)
        pg = v.get("process_grid", [0] * (ndim + 1))
        if not isinstance(pg, (list, tuple)) or len(pg) != ndim + 1:
            names = ", ".join([f"p{k + 1}" for k in range(ndim)] + ["p_depth"]) if ndim > 1 else "px, py"
            raise ConfigError(f"solver.process_grid: must be [{names}] (ranks along each state axis and along "
                              f"depth), got {pg!r}")
        pg = tuple(ck.integer(f"solver.process_grid[{i}]", p, lo=0, hi=1 << 20) for i, p in enumerate(pg))
        nu_start = v.get("nu_start")
        return cls(
            rtol=ck.num("solver.rtol", v.get("rtol", d.rtol), lo=0.0, hi=1.0, hi_open=True),
            atol=ck.num("solver.atol", v.get("atol", d.atol), lo=0.0),
            stol=ck.num("solver.stol", v.get("stol", d.stol), lo=0.0, hi=1.0, hi_open=True),
            max_it=ck.integer("solver.max_it", v.get("max_it", d.max_it), lo=1, hi=100000),
            continuation=ck.string("solver.continuation", v.get("continuation", d.continuation), CONTINUATION),
            loss_steps=ck.integer("solver.loss_steps", v.get("loss_steps", d.loss_steps), lo=1, hi=100000),
            min_step=ck.num("solver.min_step", v.get("min_step", d.min_step), lo=0.0, lo_open=True, hi=1.0),
            max_stages=ck.integer("solver.max_stages", v.get("max_stages", d.max_stages), lo=1, hi=1000000),
            nu_start=None if nu_start is None else ck.num("solver.nu_start", nu_start, lo=0.0, lo_open=True,
                                                          hi=1e6),
            grid_levels=ck.integer("solver.grid_levels", v.get("grid_levels", d.grid_levels), lo=0, hi=30),
            process_grid=pg,
            positivity=ck.num("solver.positivity", v.get("positivity", d.positivity), lo=0.0, lo_open=True,
                              hi=1.0),
            step_cap=ck.string("solver.step_cap", v.get("step_cap", d.step_cap), STEP_CAPS),
            guess=ck.string("solver.guess", v.get("guess", d.guess), GUESSES),
            optimisation_fallback=ck.boolean("solver.optimisation_fallback",
                                             v.get("optimisation_fallback", d.optimisation_fallback)),
            optimisation_maxiter=ck.integer("solver.optimisation_maxiter",
                                            v.get("optimisation_maxiter", d.optimisation_maxiter), lo=1),
            optimisation_chunk=ck.integer("solver.optimisation_chunk",
                                          v.get("optimisation_chunk", d.optimisation_chunk), lo=1),
            optimisation_perturbation=ck.num("solver.optimisation_perturbation",
                                             v.get("optimisation_perturbation", d.optimisation_perturbation),
                                             lo=0.0, hi=1.0),
            linear=ck.string("solver.linear", v.get("linear", d.linear), LINEAR_SOLVERS),
        )


# ---------------------------------------------------------------------------- checkpoint

@dataclass(frozen=True)
class CheckpointConfig:
    """``[checkpoint]``: when ``mfc-hpc solve`` writes restart files (:mod:`mfc_hpc.fileio.restart`).

    ``every_newton``: every k Newton iterations (0 = off); ``every_minutes``: every X
    minutes of wall time (0 = off); ``at_stage_end``: after every converged solve
    (continuation stage, grid level); ``on_signal``: on SIGTERM/SIGUSR1 write one and exit
    75 (requeue); ``keep``: how many of the newest checkpoints to keep; ``directory``:
    where (relative to the output directory); ``xdmf``: write ``solution.xmf`` next to
    ``solution.h5`` for ParaView/VisIt; ``enabled = false`` turns all of it off.
    """

    enabled: bool = True
    directory: str = "checkpoints"
    every_newton: int = 0
    every_minutes: float = 0.0
    at_stage_end: bool = True
    on_signal: bool = True
    keep: int = 2
    xdmf: bool = True

    @classmethod
    def parse(cls, v: dict, base: Path | None = None) -> "CheckpointConfig":
        v = ck.table("checkpoint", v, {f.name for f in dataclasses.fields(cls)})
        d = _defaults(cls)
        directory = ck.string("checkpoint.directory", v.get("directory", d.directory))
        if not directory.strip():
            raise ConfigError("checkpoint.directory: must not be empty")
        return cls(
            enabled=ck.boolean("checkpoint.enabled", v.get("enabled", d.enabled)),
            directory=directory,
            every_newton=ck.integer("checkpoint.every_newton", v.get("every_newton", d.every_newton), lo=0),
            every_minutes=ck.num("checkpoint.every_minutes", v.get("every_minutes", d.every_minutes), lo=0.0,
                                 hi=1e7),
            at_stage_end=ck.boolean("checkpoint.at_stage_end", v.get("at_stage_end", d.at_stage_end)),
            on_signal=ck.boolean("checkpoint.on_signal", v.get("on_signal", d.on_signal)),
            keep=ck.integer("checkpoint.keep", v.get("keep", d.keep), lo=1, hi=100000),
            xdmf=ck.boolean("checkpoint.xdmf", v.get("xdmf", d.xdmf)),
        )


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class DataConfig:
    """``[data]``: labelled samples instead of ``[[classes]]`` (:mod:`mfc_hpc.problem.tables`).

    ``file``: a CSV (header row), NPZ or HDF5 table, or ``"builtin:NAME"`` (shipped:
    :data:`mfc_hpc.problem.tables.SHIPPED`); ``label``: the label column; ``columns``:
    the feature columns (default all others; ``features`` given as a list of names is the
    same); ``features``: the state dimension ``d`` the features are projected to (1 or 2);
    ``classes``: labels to keep, in this order; ``projection``: ``"none"`` (exactly ``d``
    feature columns), ``"pca"`` or ``"lda"``; ``test_fraction`` (0: no test split) and ``seed``: the
    stratified split; ``bandwidth``: the kernel width rule (``"silverman"``, ``"scott"``)
    or a number (one per axis allowed); ``head``: ``"targets"`` (classes sent to targets
    ``t_c``, logits ``-|x - t_c|^2 / (2 s^2)``) or ``"fitted"`` (multinomial logistic
    regression on the untransformed training features); default ``"targets"`` for
    ``d = 1`` and ``"fitted"`` for ``d = 2``; ``gamma`` the loss weight of that head,
    ``targets`` (``K`` numbers, or ``K`` points when ``d = 2``) and ``head_width`` ``s``.
    Reading the table, projecting and fitting happen when the problem is built, never
    while the configuration loads.
    """

    file: str
    label: str = "label"
    columns: tuple[str, ...] = ()
    features: int = 1
    classes: tuple[str, ...] = ()
    projection: str = "lda"
    test_fraction: float = 0.3
    seed: int = 0
    bandwidth: Any = "silverman"
    head: str | None = None
    gamma: float = 1.0
    targets: tuple = ()
    head_width: float | None = None

    @property
    def head_kind(self) -> str:
        return self.head or ("targets" if self.features == 1 else "fitted")

    @classmethod
    def parse(cls, v: Any, base: Path, user_loss: bool = False, ndim: int | None = None) -> "DataConfig":
        v = ck.table("data", v, {f.name for f in dataclasses.fields(cls)})
        if "file" not in v:
            raise ConfigError("data.file: required (a CSV, NPZ or HDF5 table, or 'builtin:NAME')")
        file = ck.string("data.file", v["file"])
        if file.startswith("builtin:") and file.split(":", 1)[1] in SYNTHETIC:
            path = file
        else:
            path = resolve_data_path(file, base)
            if not path.is_file():
                raise ConfigError(f"data.file: no such file: {path}")
        head_keys = {"gamma", "targets", "head_width", "head"} & set(v)
        if user_loss and head_keys:
            raise ConfigError(f"data.{sorted(head_keys)[0]}: a [loss] section gives the head; "
                              "leave the head keys of [data] out")

        def strs(key: str, x) -> tuple[str, ...]:
            if not isinstance(x, list) or not all(isinstance(s, (str, int)) and not isinstance(s, bool) for s in x):
                raise ConfigError(f"data.{key}: must be a list of names, got {x!r}")
            names = tuple(str(s) for s in x)
            if len(set(names)) != len(names):
                dup = next(s for s in names if names.count(s) > 1)
                raise ConfigError(f"data.{key}: {dup!r} is listed twice")
            return names

        feats = v.get("features", None)
        columns = strs("columns", v.get("columns", []))
        if isinstance(feats, list):  # the older form: feature column names
            if "columns" in v:
                raise ConfigError("data.features: give the feature columns as data.columns and the state "
                                  "dimension as data.features = 1 or 2")
            columns, feats = strs("features", feats), None
        dims = ndim if feats is None else ck.integer("data.features", feats, lo=1)
        dims = 1 if dims is None else dims
        if dims not in (1, 2):
            raise ConfigError(f"data.features: the state dimension must be 1 or 2, got {dims}")
        if ndim is not None and dims != ndim:
            raise ConfigError(f"data.features: {dims} feature(s) but the mesh has {ndim} state axes")
        bw = v.get("bandwidth", "silverman")
        if isinstance(bw, str):
            bw = ck.string("data.bandwidth", bw, BANDWIDTH_RULES)
        elif isinstance(bw, (list, tuple)):
            bw = ck.vector("data.bandwidth", bw, dims, lo=0.0, lo_open=True)
        else:  # one number: the same width on every axis
            bw = (ck.num("data.bandwidth", bw, lo=0.0, lo_open=True),) * dims
        head = v.get("head")
        tg = v.get("targets", [])
        if not isinstance(tg, list):
            raise ConfigError(f"data.targets: must be a list, got {tg!r}")
        targets = ck.matrix("data.targets", tg, len(tg), dims) if tg else ()
        if dims == 1:
            targets = tuple(t[0] for t in targets)
        hw = v.get("head_width")
        return cls(
            file=str(path), label=ck.string("data.label", v.get("label", "label")),
            columns=columns, features=dims, classes=strs("classes", v.get("classes", [])),
            projection=ck.string("data.projection", v.get("projection", "lda"), PROJECTIONS),
            test_fraction=ck.num("data.test_fraction", v.get("test_fraction", 0.3), lo=0.0,
                                 hi=0.9),
            seed=ck.integer("data.seed", v.get("seed", 0), lo=0, hi=2 ** 63 - 1),
            bandwidth=bw,
            head=None if head is None else ck.string("data.head", head, HEADS),
            gamma=ck.num("data.gamma", v.get("gamma", 1.0), lo=0.0, lo_open=True, hi=1e8),
            targets=targets,
            head_width=None if hw is None else ck.num("data.head_width", hw, lo=0.0, lo_open=True),
        )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["bandwidth"] = list(self.bandwidth) if isinstance(self.bandwidth, tuple) else self.bandwidth
        out["targets"] = [list(t) if isinstance(t, tuple) else t for t in self.targets]
        out["head"] = self.head_kind
        return out
