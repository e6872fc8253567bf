"""TOML -> one validated :class:`Config`. Loading reads the TOML file and nothing else:
data tables are read, projected and turned into densities when the problem is built
(:func:`mfc_hpc.problem.build.build_problem`)."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .sections import (CheckpointConfig, ClassConfig, DataConfig, LossConfig, MeshConfig, ModelConfig,
                       SolverConfig)

__all__ = ["Config", "load_config", "config_from_dict", "SECTIONS", "MAX_CONFIG_BYTES"]

#: the sections of a configuration file
SECTIONS = ("mesh", "model", "classes", "data", "loss", "solver", "checkpoint")
#: a configuration file larger than this is refused unread
MAX_CONFIG_BYTES = 1 << 20
_MAX_DEPTH = 8


@dataclass(frozen=True)
class Config:
    """The whole run: mesh, model, classes (or data), loss, solver, checkpoints."""

    mesh: MeshConfig = field(default_factory=MeshConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    classes: tuple[ClassConfig, ...] = ()
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    data: DataConfig | None = None
    #: whether the loss came from a [loss] section (with [data]: else the data's head)
    user_loss: bool = True
    base: str = "."

    @property
    def ndim(self) -> int:
        return self.mesh.ndim

    @property
    def K(self) -> int | None:
        """The number of classes (``None`` for a ``[data]`` section that does not list them:
        known once the table is read)."""
        if self.classes:
            return len(self.classes)
        if self.data is not None and self.data.classes:
            return len(self.data.classes)
        return None

    def floor_for(self, K: int) -> float:
        if self.model.floor is not None:
            return self.model.floor
        return 0.0 if K == 1 else 1e-3

    def to_dict(self) -> dict:
        """The configuration as given and defaulted (JSON-ready); the resolved problem
        (domain from the data, the head, the classes of a table) is added by
        :meth:`mfc_hpc.problem.build.Problem.resolved_config`."""
        n = self.ndim
        out = {"mesh": self.mesh.to_dict(), "model": dataclasses.asdict(self.model),
               "classes": [c.to_dict(n) for c in self.classes],
               "loss": self.loss.to_dict(n) if self.user_loss else None,
               "solver": {**dataclasses.asdict(self.solver), "process_grid": list(self.solver.process_grid)},
               "checkpoint": dataclasses.asdict(self.checkpoint),
               "data": None if self.data is None else self.data.to_dict()}
        if self.K is not None:
            out["model"]["floor"] = self.floor_for(self.K)
        return out

    def replace(self, **sections: Any) -> "Config":
        """A copy with some sections' fields changed: ``cfg.replace(mesh={"nodes": (33,)})``.
        Integers given for ``mesh.nodes`` apply to every axis."""
        kw = {}
        for name, changes in sections.items():
            if name == "mesh" and "nodes" in changes and not isinstance(changes["nodes"], (tuple, list)):
                changes = dict(changes, nodes=(int(changes["nodes"]),) * self.ndim)
            if name == "mesh":
                changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items()}
            if name == "solver" and "process_grid" in changes:
                changes = dict(changes, process_grid=tuple(changes["process_grid"]))
            kw[name] = dataclasses.replace(getattr(self, name), **changes)
        return dataclasses.replace(self, **kw)


def _depth(x: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(x, dict):
        return max([_depth(v, level + 1) for v in x.values()] or [level])
    if isinstance(x, list):
        return max([_depth(v, level + 1) for v in x] or [level])
    return level


def _dimension(raw: dict) -> int:
    """The state dimension: from the mesh lists, else ``data.features``, else the length of
    the first class's mean, else 1."""
    mesh = raw.get("mesh", {})
    if not isinstance(mesh, dict):
        raise ConfigError(f"mesh: must be a table, got {mesh!r}")
    n = MeshConfig.dims_of(mesh)
    if n is not None:
        return n
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("features"), int) and not isinstance(data["features"], bool):
        return data["features"]
    cls = raw.get("classes")
    if isinstance(cls, list) and cls and isinstance(cls[0], dict) and isinstance(cls[0].get("mean"), list):
        return len(cls[0]["mean"])
    return 1


def config_from_dict(raw: dict, base: Path | str = ".") -> Config:
    """Validate a parsed TOML document into a :class:`Config` (no data I/O)."""
    base = Path(base)
    if not isinstance(raw, dict):
        raise ConfigError("config: the document must be a table")
    if _depth(raw) > _MAX_DEPTH:
        raise ConfigError(f"config: tables nested deeper than {_MAX_DEPTH} levels")
    for k in raw:
        if k not in SECTIONS:
            raise ConfigError(f"{k}: unknown section (allowed: {', '.join(sorted(SECTIONS))})")
    ndim = _dimension(raw)
    if ndim not in (1, 2):
        mesh = raw.get("mesh", {})
        data = raw.get("data")
        if MeshConfig.dims_of(mesh) is None and isinstance(data, dict) and "features" in data:
            raise ConfigError(f"data.features: the state dimension must be 1 or 2, got {ndim}")
        raise ConfigError(f"mesh: the state dimension must be 1 or 2, got {ndim}")
    classes_raw = raw.get("classes")
    data = None
    if "data" in raw:
        if classes_raw is not None:
            raise ConfigError("data: give either a [data] section or [[classes]] entries, not both")
        data = DataConfig.parse(raw["data"], base, user_loss="loss" in raw, ndim=ndim)
    elif classes_raw is None:
        raise ConfigError("classes: at least one [[classes]] entry is required")
    if data is None and (not isinstance(classes_raw, list) or not classes_raw):
        raise ConfigError("classes: must be a non-empty array of tables [[classes]]")
    mesh = MeshConfig.parse(raw.get("mesh", {}), ndim, bounds_from_data=data is not None)
    classes = () if data is not None else tuple(ClassConfig.parse(c, f"classes[{k}]", base, ndim)
                                                for k, c in enumerate(classes_raw))
    model = ModelConfig.parse(raw.get("model", {}))
    K = len(classes) if classes else (len(data.classes) if data and data.classes else None)
    if (K is None or K > 1) and model.eta == 0.0:
        raise ConfigError("model.eta: must be > 0 with several classes (the shared control is singular where "
                          "the density vanishes)")
    loss = LossConfig()
    if "loss" in raw:
        loss = LossConfig.parse(raw["loss"], K, ndim, base)
    elif data is None:
        loss = LossConfig(target=(0.0,) * ndim)
    return Config(mesh=mesh, model=model, classes=classes, loss=loss,
                  solver=SolverConfig.parse(raw.get("solver", {}), ndim),
                  checkpoint=CheckpointConfig.parse(raw.get("checkpoint", {}), base),
                  data=data, user_loss="loss" in raw, base=str(base))


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    if not str(path).strip():
        raise ConfigError("config: the file name is empty")
    if not p.is_file():
        raise ConfigError(f"config: no such file: {p}")
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config: {p} is {size} bytes, larger than a configuration can be "
                              f"({MAX_CONFIG_BYTES} bytes)")
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not a text file") from None
    except RecursionError:
        raise ConfigError(f"config: {p} nests tables or arrays too deeply") from None
    except OSError as e:
        raise ConfigError(f"config: cannot read {p}: {e.strerror or e}") from None
    return config_from_dict(raw, p.parent)
