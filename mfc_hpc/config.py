"""One validated run configuration, loaded from TOML.

Every section is a frozen dataclass; :func:`load_config` rejects unknown keys, wrong
types and impossible values with a :class:`ConfigError` whose one-line message names the
key (``mesh.nodes: must be an integer >= 3, got -4``). ``Config.to_dict()`` is the
resolved configuration written next to every result.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Config", "MeshConfig", "ModelConfig", "ClassConfig",
           "LossConfig", "SolverConfig", "CheckpointConfig", "load_config", "config_from_dict"]


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the offending key."""


# ---------------------------------------------------------------------------- checks

def _num(key: str, v: Any, *, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}: must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(f"{key}: must be finite, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ConfigError(f"{key}: must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key}: must be <= {hi:g}, got {v:g}")
    return v


def _int(key: str, v: Any, *, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key}: must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{key}: must be an integer >= {lo}, got {v}")
    return v


def _str(key: str, v: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{key}: must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {v!r}")
    return v


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: must be true or false, got {v!r}")
    return v


def _nums(key: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{key}: must be a list of numbers, got {v!r}")
    return tuple(_num(f"{key}[{i}]", x) for i, x in enumerate(v))


def _data_file(key: str, v: Any, base: Path) -> str:
    """An existing file named by ``key`` (relative paths: to the configuration's folder)."""
    p = Path(_str(key, v))
    path = p if p.is_absolute() else base / p
    if not path.is_file():
        raise ConfigError(f"{key}: no such file: {path}")
    return str(path)


def _table(key: str, v: Any, allowed: set[str]) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: must be a table, got {v!r}")
    for k in v:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return v


# ---------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class MeshConfig:
    """``[mesh]``: state interval ``[x_min, x_max]``, ``nodes`` M, ``layers`` N, ``depth`` T."""

    x_min: float = -3.0
    x_max: float = 3.0
    nodes: int = 65
    layers: int = 16
    depth: float = 1.0

    @classmethod
    def parse(cls, v: dict) -> "MeshConfig":
        v = _table("mesh", v, {f.name for f in dataclasses.fields(cls)})
        d = dataclasses.asdict(cls())
        out = dict(
            x_min=_num("mesh.x_min", v.get("x_min", d["x_min"])),
            x_max=_num("mesh.x_max", v.get("x_max", d["x_max"])),
            nodes=_int("mesh.nodes", v.get("nodes", d["nodes"]), lo=3),
            layers=_int("mesh.layers", v.get("layers", d["layers"]), lo=1),
            depth=_num("mesh.depth", v.get("depth", d["depth"]), lo=0.0, lo_open=True),
        )
        if out["x_max"] <= out["x_min"]:
            raise ConfigError(f"mesh.x_max: must exceed mesh.x_min ({out['x_min']:g}), got {out['x_max']:g}")
        return cls(**out)


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
        v = _table("model", v, {f.name for f in dataclasses.fields(cls)})
        floor = v.get("floor")
        out = cls(
            nu=_num("model.nu", v.get("nu", 0.1), lo=0.0, lo_open=True),
            eta=_num("model.eta", v.get("eta", 0.0), lo=0.0),
            running=_str("model.running", v.get("running", "none"), ("none", "congestion")),
            kappa=_num("model.kappa", v.get("kappa", 0.0), lo=0.0),
            floor=None if floor is None else _num("model.floor", floor, lo=0.0, hi=0.5),
            scheme=_str("model.scheme", v.get("scheme", "midpoint"), ("midpoint", "euler")),
        )
        if out.running == "congestion" and "kappa" not in v:
            raise ConfigError("model.kappa: required when model.running = 'congestion'")
        return out


@dataclass(frozen=True)
class ClassConfig:
    """``[[classes]]``: a ``prior`` and the data: Gaussian ``mean``/``var`` or ``samples``.

    ``samples`` is a file of one column of numbers (``.npy``, ``.txt``/``.csv``), turned
    into a density by a Gaussian kernel of width ``bandwidth`` (default: Silverman's rule).
    ``values`` holds samples in memory instead (classes made from a ``[data]`` section).
    """

    prior: float = 1.0
    mean: float | None = None
    var: float | None = None
    samples: str | None = None
    bandwidth: float | None = None
    name: str | None = None
    values: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, v: dict, k: int, base: Path) -> "ClassConfig":
        key = f"classes[{k}]"
        v = _table(key, v, {f.name for f in dataclasses.fields(cls)} - {"values"})
        has_g = "mean" in v or "var" in v
        has_s = "samples" in v
        if has_g == has_s:
            raise ConfigError(f"{key}: give either mean and var (Gaussian) or samples (a file)")
        samples = None
        if has_s:
            samples = _data_file(f"{key}.samples", v["samples"], base)
        elif "mean" not in v or "var" not in v:
            raise ConfigError(f"{key}: a Gaussian class needs both mean and var")
        return cls(
            prior=_num(f"{key}.prior", v.get("prior", 1.0), lo=0.0, lo_open=True),
            mean=None if "mean" not in v else _num(f"{key}.mean", v["mean"]),
            var=None if "var" not in v else _num(f"{key}.var", v["var"], lo=0.0, lo_open=True),
            samples=samples,
            bandwidth=None if "bandwidth" not in v else _num(f"{key}.bandwidth", v["bandwidth"], lo=0.0, lo_open=True),
            name=None if "name" not in v else _str(f"{key}.name", v["name"]),
        )


@dataclass(frozen=True)
class LossConfig:
    """``[loss]``: the read-out loss ``G_c`` at depth T.

    ``kind = "quadratic"``: ``G = alpha/2 (x - target)^2`` (all classes);
    ``kind = "softmax"``: ``G_c = gamma * CE_c`` with logits ``weights[k] x + biases[k]``;
    ``kind = "kl"``: transport, ``gamma * KL(rho_c(T) | q_c)``; ``kind = "bridge"``: the
    Schroedinger bridge ``rho(T) = q`` (one class). The target density ``q`` is
    ``target = {mean, var}`` or ``{samples, bandwidth}`` (a table: one target shared by
    all classes, scaled to each prior) or ``[[loss.targets]]`` (one per class), mixed with
    a uniform ``floor`` (fraction of the mass, default 1e-4) and normalised to the class
    priors (:mod:`mfc_hpc.transport`).
    """

    kind: str = "quadratic"
    alpha: float = 1.0
    target: float = 0.0
    weights: tuple[float, ...] = ()
    biases: tuple[float, ...] = ()
    gamma: float = 1.0
    targets: tuple[ClassConfig, ...] = ()
    floor: float = 1e-4

    @classmethod
    def parse(cls, v: dict, K: int, base: Path | str = ".") -> "LossConfig":
        v = _table("loss", v, ({f.name for f in dataclasses.fields(cls)} | {"targets"}))
        kind = _str("loss.kind", v.get("kind", "quadratic"), ("quadratic", "softmax", "kl", "bridge"))
        if kind in ("kl", "bridge"):
            return cls._parse_transport(kind, v, K, Path(base))
        extra = {"targets", "floor"} & set(v)
        if extra:
            raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the {kind} loss (only of kl and bridge)")
        if kind == "quadratic":
            extra = {"weights", "biases", "gamma"} & set(v)
            if extra:
                raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the quadratic loss")
            return cls(kind=kind, alpha=_num("loss.alpha", v.get("alpha", 1.0), lo=0.0, lo_open=True),
                       target=_num("loss.target", v.get("target", 0.0)))
        extra = {"alpha", "target"} & set(v)
        if extra:
            raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the softmax loss")
        if "weights" not in v:
            raise ConfigError("loss.weights: required for the softmax loss (one per class)")
        wts = _nums("loss.weights", v["weights"])
        bss = _nums("loss.biases", v.get("biases", [0.0] * len(wts)))
        if len(wts) != K:
            raise ConfigError(f"loss.weights: needs one weight per class ({K}), got {len(wts)}")
        if len(bss) != K:
            raise ConfigError(f"loss.biases: needs one bias per class ({K}), got {len(bss)}")
        return cls(kind=kind, weights=wts, biases=bss,
                   gamma=_num("loss.gamma", v.get("gamma", 1.0), lo=0.0, lo_open=True))

    @classmethod
    def _parse_transport(cls, kind: str, v: dict, K: int, base: Path) -> "LossConfig":
        extra = {"alpha", "weights", "biases"} & set(v)
        if kind == "bridge":
            extra |= {"gamma"} & set(v)
        if extra:
            raise ConfigError(f"loss.{sorted(extra)[0]}: not a key of the {kind} loss")
        if ("target" in v) == ("targets" in v):
            raise ConfigError(f"loss.target: the {kind} loss needs a target density: a table target = "
                              "{mean = .., var = ..} or {samples = ..}, or one [[loss.targets]] per class")
        if "target" in v:
            targets = (_parse_target("loss.target", v["target"], base),)
        else:
            raw = v["targets"]
            if not isinstance(raw, list) or not raw:
                raise ConfigError(f"loss.targets: must be a non-empty array of tables, got {raw!r}")
            if len(raw) != K:
                raise ConfigError(f"loss.targets: needs one target per class ({K}), got {len(raw)}")
            targets = tuple(_parse_target(f"loss.targets[{k}]", t, base) for k, t in enumerate(raw))
        if kind == "bridge" and K != 1:
            raise ConfigError(f"loss.kind: the bridge needs exactly one class (a shared control cannot steer "
                              f"{K} class densities onto independent targets); use kind = 'kl'")
        return cls(kind=kind, gamma=_num("loss.gamma", v.get("gamma", 1.0), lo=0.0, lo_open=True),
                   targets=targets, floor=_num("loss.floor", v.get("floor", 1e-4), lo=0.0, hi=0.5))


def _parse_target(key: str, v: Any, base: Path) -> ClassConfig:
    """A target density of the transport losses: Gaussian ``mean``/``var`` or ``samples``."""
    v = _table(key, v, {"mean", "var", "samples", "bandwidth"})
    has_g, has_s = "mean" in v or "var" in v, "samples" in v
    if has_g == has_s:
        raise ConfigError(f"{key}: give either mean and var (Gaussian) or samples (a file)")
    if has_g and not ("mean" in v and "var" in v):
        raise ConfigError(f"{key}: a Gaussian target needs both mean and var")
    samples = _data_file(f"{key}.samples", v["samples"], base) if has_s else None
    if "bandwidth" in v and not has_s:
        raise ConfigError(f"{key}.bandwidth: only for samples")
    return ClassConfig(
        mean=None if "mean" not in v else _num(f"{key}.mean", v["mean"]),
        var=None if "var" not in v else _num(f"{key}.var", v["var"], lo=0.0, lo_open=True),
        samples=samples,
        bandwidth=None if "bandwidth" not in v else _num(f"{key}.bandwidth", v["bandwidth"], lo=0.0, lo_open=True))


@dataclass(frozen=True)
class SolverConfig:
    """``[solver]``: Newton tolerances, continuation, grid sequencing, process grid.

    ``rtol``/``atol``/``stol``: SNES tolerances (the residual rows scale with ``h``,
    so ``atol`` is relative to the norm of the boundary data); ``max_it`` Newton steps
    per solve; ``continuation``: continue in the loss weight (``loss_steps`` initial
    stages, adaptive with a tangent predictor) when plain Newton fails, or always if
    ``"always"``; ``nu_start``: start the nu-continuation from this noise level
    (geometric steps down to ``model.nu``); ``grid_levels``: coarse meshes solved first;
    ``process_grid``: ``[px, py]`` ranks along nodes and layers (0 = let PETSc choose);
    ``positivity``: fraction of the distance to a zero density a Newton step may go;
    ``guess``: ``"uncontrolled"`` (the uncontrolled flow) or ``"optimisation"`` (the
    minimiser of the discrete training problem by L-BFGS, :mod:`mfc_hpc.optimality`, at
    the full loss weight); ``optimisation_fallback``: when continuation stalls (a fold of
    the branch it follows), start Newton again from that minimiser (not with
    ``continuation = "never"``, which asks for plain Newton only);
    ``optimisation_maxiter``: L-BFGS iterations of that guess in all, run in chunks of
    ``optimisation_chunk`` with a Newton attempt after each; ``linear``: the linear
    solver of every Newton step, ``"direct"`` (MUMPS LU), ``"multigrid"`` (FGMRES +
    geometric multigrid on the DMDA hierarchy, ranks split along depth; falls back to
    LU if a linear solve fails) or ``"auto"`` (multigrid for one class from 2e5 unknowns
    on a mesh that coarsens three times, direct otherwise; -mfc_ksp_type/-mfc_pc_type on
    the command line override all three).
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
    process_grid: tuple[int, int] = (0, 0)
    positivity: float = 0.9
    guess: str = "uncontrolled"
    optimisation_fallback: bool = True
    optimisation_maxiter: int = 10000
    optimisation_chunk: int = 1000
    linear: str = "auto"

    @classmethod
    def parse(cls, v: dict) -> "SolverConfig":
        v = _table("solver", v, {f.name for f in dataclasses.fields(cls)})
        d = cls()
        pg = v.get("process_grid", [0, 0])
        if not isinstance(pg, (list, tuple)) or len(pg) != 2:
            raise ConfigError(f"solver.process_grid: must be [px, py], got {pg!r}")
        pg = (_int("solver.process_grid[0]", pg[0], lo=0), _int("solver.process_grid[1]", pg[1], lo=0))
        nu_start = v.get("nu_start")
        return cls(
            rtol=_num("solver.rtol", v.get("rtol", d.rtol), lo=0.0),
            atol=_num("solver.atol", v.get("atol", d.atol), lo=0.0),
            stol=_num("solver.stol", v.get("stol", d.stol), lo=0.0),
            max_it=_int("solver.max_it", v.get("max_it", d.max_it), lo=1),
            continuation=_str("solver.continuation", v.get("continuation", d.continuation),
                              ("auto", "always", "never")),
            loss_steps=_int("solver.loss_steps", v.get("loss_steps", d.loss_steps), lo=1),
            min_step=_num("solver.min_step", v.get("min_step", d.min_step), lo=0.0, lo_open=True),
            max_stages=_int("solver.max_stages", v.get("max_stages", d.max_stages), lo=1),
            nu_start=None if nu_start is None else _num("solver.nu_start", nu_start, lo=0.0, lo_open=True),
            grid_levels=_int("solver.grid_levels", v.get("grid_levels", d.grid_levels), lo=0),
            process_grid=pg,
            positivity=_num("solver.positivity", v.get("positivity", d.positivity), lo=0.0, lo_open=True, hi=1.0),
            guess=_str("solver.guess", v.get("guess", d.guess), ("uncontrolled", "optimisation")),
            optimisation_fallback=_bool("solver.optimisation_fallback",
                                        v.get("optimisation_fallback", d.optimisation_fallback)),
            optimisation_maxiter=_int("solver.optimisation_maxiter",
                                      v.get("optimisation_maxiter", d.optimisation_maxiter), lo=1),
            optimisation_chunk=_int("solver.optimisation_chunk",
                                    v.get("optimisation_chunk", d.optimisation_chunk), lo=1),
            linear=_str("solver.linear", v.get("linear", d.linear), ("auto", "direct", "multigrid")),
        )


@dataclass(frozen=True)
class CheckpointConfig:
    """``[checkpoint]``: when ``mfc-hpc solve`` writes restart files (:mod:`mfc_hpc.checkpoint`).

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
        v = _table("checkpoint", v, {f.name for f in dataclasses.fields(cls)})
        d = cls()
        directory = _str("checkpoint.directory", v.get("directory", d.directory))
        if not directory.strip():
            raise ConfigError("checkpoint.directory: must not be empty")
        return cls(
            enabled=_bool("checkpoint.enabled", v.get("enabled", d.enabled)),
            directory=directory,
            every_newton=_int("checkpoint.every_newton", v.get("every_newton", d.every_newton), lo=0),
            every_minutes=_num("checkpoint.every_minutes", v.get("every_minutes", d.every_minutes), lo=0.0),
            at_stage_end=_bool("checkpoint.at_stage_end", v.get("at_stage_end", d.at_stage_end)),
            on_signal=_bool("checkpoint.on_signal", v.get("on_signal", d.on_signal)),
            keep=_int("checkpoint.keep", v.get("keep", d.keep), lo=1),
            xdmf=_bool("checkpoint.xdmf", v.get("xdmf", d.xdmf)),
        )


@dataclass(frozen=True)
class Config:
    """The whole run: mesh, model, classes, loss, solver."""

    mesh: MeshConfig = field(default_factory=MeshConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    classes: tuple[ClassConfig, ...] = ()
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    extra: dict = field(default_factory=dict)

    @property
    def K(self) -> int:
        return len(self.classes)

    @property
    def floor(self) -> float:
        if self.model.floor is not None:
            return self.model.floor
        return 0.0 if self.K == 1 else 1e-3

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = [dataclasses.asdict(c) for c in self.classes]
        d["model"]["floor"] = self.floor
        return d

    def replace(self, **sections: Any) -> "Config":
        """A copy with some sections' fields changed: ``cfg.replace(mesh={"nodes": 33})``."""
        kw = {name: dataclasses.replace(getattr(self, name), **changes)
              for name, changes in sections.items()}
        return dataclasses.replace(self, **kw)


#: sections other modules may add (checkpointing, data, ...); parsed by their owners
EXTRA_SECTIONS: dict[str, Any] = {}
EXTRA_SECTIONS["checkpoint"] = CheckpointConfig.parse  # cfg.extra["checkpoint"]; see checkpoint.py

_SECTIONS = {"mesh", "model", "classes", "loss", "solver", "data"}


def config_from_dict(raw: dict, base: Path | str = ".") -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    base = Path(base)
    if not isinstance(raw, dict):
        raise ConfigError("config: the document must be a table")
    for k in raw:
        if k not in _SECTIONS and k not in EXTRA_SECTIONS:
            raise ConfigError(f"{k}: unknown section (allowed: {', '.join(sorted(_SECTIONS | set(EXTRA_SECTIONS)))})")
    classes_raw = raw.get("classes")
    data = None
    if "data" in raw:  # classes (and by default the head) from labelled samples: mfc_hpc.data
        from .data import parse_data_section
        if classes_raw is not None:
            raise ConfigError("data: give either a [data] section or [[classes]] entries, not both")
        data = parse_data_section(raw["data"], base, MeshConfig.parse(raw.get("mesh", {})),
                                  user_loss="loss" in raw)
    elif classes_raw is None:
        raise ConfigError("classes: at least one [[classes]] entry is required")
    if data is None and (not isinstance(classes_raw, list) or not classes_raw):
        raise ConfigError("classes: must be a non-empty array of tables [[classes]]")
    classes = data.classes if data else tuple(ClassConfig.parse(c, k, base) for k, c in enumerate(classes_raw))
    model = ModelConfig.parse(raw.get("model", {}))
    if len(classes) > 1 and model.eta == 0.0:
        raise ConfigError("model.eta: must be > 0 with several classes (the shared control is singular where the density vanishes)")
    extra = {k: EXTRA_SECTIONS[k](v, base) for k, v in raw.items() if k in EXTRA_SECTIONS}
    if data is not None:
        extra["data"] = data.config
    return Config(
        mesh=MeshConfig.parse(raw.get("mesh", {})),
        model=model,
        classes=classes,
        loss=data.loss if data is not None and "loss" not in raw else LossConfig.parse(raw.get("loss", {}), len(classes), base),
        solver=SolverConfig.parse(raw.get("solver", {})),
        extra=extra,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: no such file: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not a text file") from None
    return config_from_dict(raw, p.parent)
