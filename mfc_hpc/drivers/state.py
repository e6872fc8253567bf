"""The run state: where a solve stands, advanced by the driver, written and read by restart.

A run is a sequence of grid levels (coarse to fine); on each level a sequence of phases
(:class:`Phase`): direct Newton; the uncontrolled flow at loss weight 0; continuation in
the loss weight to 1; continuation in ``nu`` to its target; the optimisation route; done.
Inside a continuation the :class:`ContinuationCursor` says which value is accepted, which
is being solved for and the step; inside a Newton solve the
:class:`~mfc_hpc.parallel.snes.NewtonCursor` says which iteration. :meth:`RunState.to_json`
and :meth:`RunState.from_json` are the checkpoint's ``resume`` attribute; the latter
validates every field (a damaged or foreign cursor is refused, never half-trusted).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import BadInput
from ..parallel.snes import NewtonCursor

__all__ = ["Phase", "ContinuationCursor", "RunState", "PARAMETERS"]

#: continuation parameters
PARAMETERS = ("loss", "nu")


class Phase(str, Enum):
    """The phases of one grid level, in order."""

    DIRECT = "direct"
    LOSS0 = "loss0"
    LOSS = "loss"
    NU = "nu"
    OPTIMISATION = "optimisation"
    DONE = "done"


@dataclass
class ContinuationCursor:
    """A continuation in ``param`` (``loss`` or ``nu``): the accepted coordinate ``u`` (the
    value, or its logarithm for ``nu``), the next ``step``, the stages so far and their
    records, the accepted ``value``, and ``target_u`` while a Newton solve for the next
    value runs (``None`` between stages)."""

    param: str
    u: float
    step: float
    stages: int
    value: float
    records: list = field(default_factory=list)
    newton_iterations: int = 0
    target_u: float | None = None


@dataclass
class RunState:
    """The cursor of a run (see the module docstring)."""

    level: int = 0
    mesh: tuple[Any, ...] | None = None
    attempt: int = 0
    prior: dict | None = None
    phase: Phase = Phase.DIRECT
    record: dict | None = None
    cont: ContinuationCursor | None = None
    newton: NewtonCursor | None = None
    history: list = field(default_factory=list)
    nu: float | None = None
    loss_weight: float | None = None

    def enter(self, phase: Phase, record: dict | None) -> None:
        self.phase, self.record, self.cont, self.newton = phase, record, None, None

    def to_json(self) -> dict:
        out = {"level": self.level, "mesh": None if self.mesh is None else list(self.mesh),
               "attempt": self.attempt, "prior": self.prior, "phase": self.phase.value,
               "record": self.record, "history": self.history,
               "cont": None if self.cont is None else dataclasses.asdict(self.cont),
               "newton": None if self.newton is None else dataclasses.asdict(self.newton),
               "params": {"nu": self.nu, "loss_weight": self.loss_weight}}
        return out

    @classmethod
    def from_json(cls, r: Any, levels: int, where: str = "checkpoint") -> "RunState":
        """Validate and read a cursor (``levels``: the run's number of grid levels)."""
        def bad(why: str) -> BadInput:
            return BadInput(f"{where}: damaged resume metadata: {why}")

        def real(v, key, lo=-math.inf, hi=math.inf) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise bad(f"{key} = {v!r}")
            return float(v)

        def count(v, key, lo=0, hi=10 ** 9) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise bad(f"{key} = {v!r}")
            return v

        if not isinstance(r, dict):
            raise bad("not a table")
        try:
            phase = Phase(r.get("phase"))
        except ValueError:
            raise bad(f"phase = {r.get('phase')!r} (expected one of {', '.join(p.value for p in Phase)})") from None
        level = count(r.get("level"), "level", 0, max(levels - 1, 0))
        attempt = count(r.get("attempt", 0), "attempt", 0, 1)
        for key in ("record", "prior"):
            v = r.get(key)
            if v is None:
                continue
            if not isinstance(v, dict):
                raise bad(f"{key} is not a table")
            st = v.get("stages", [])
            if not isinstance(st, list) or not all(isinstance(x, dict) for x in st):
                raise bad(f"{key}.stages")
            ni = v.get("newton_iterations", 0)
            if isinstance(ni, bool) or not isinstance(ni, int) or ni < 0:
                raise bad(f"{key}.newton_iterations = {ni!r}")
        rec = r.get("record")
        mesh = r.get("mesh")
        if mesh is not None:
            nodes = mesh[0] if isinstance(mesh, list) and len(mesh) == 2 else None
            nodes = [nodes] if isinstance(nodes, int) and not isinstance(nodes, bool) else nodes
            if not (isinstance(nodes, list) and 1 <= len(nodes) <= 3
                    and all(isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 1 << 24 for v in nodes)
                    and isinstance(mesh[1], int) and not isinstance(mesh[1], bool) and 1 <= mesh[1] <= 1 << 24):
                raise bad(f"mesh = {mesh!r}")
        hist = r.get("history", [])
        if not isinstance(hist, list) or len(hist) != level or not all(isinstance(h, dict) for h in hist):
            raise bad(f"history has {len(hist) if isinstance(hist, list) else '?'} levels, level is {level}")
        cont = None
        c = r.get("cont")
        if c is not None:
            if not isinstance(c, dict) or c.get("param") not in PARAMETERS:
                raise bad(f"cont.param = {c.get('param') if isinstance(c, dict) else c!r}")
            if not isinstance(c.get("records", []), list) or not all(isinstance(x, dict) for x in c.get("records", [])):
                raise bad("cont.records")
            want = {"loss": Phase.LOSS, "nu": Phase.NU}[c["param"]]
            if phase != want:
                raise bad(f"a {c['param']} continuation cursor in phase {phase.value} (expected {want.value})")
            if not isinstance(c.get("step"), (int, float)) or isinstance(c.get("step"), bool) or not c["step"] > 0:
                raise bad(f"cont.step = {c.get('step')!r}")
            cont = ContinuationCursor(
                param=c["param"], u=real(c.get("u"), "cont.u"), step=real(c.get("step"), "cont.step", 0.0),
                stages=count(c.get("stages"), "cont.stages"), value=real(c.get("value"), "cont.value"),
                records=list(c.get("records", [])), newton_iterations=count(c.get("newton_iterations", 0),
                                                                            "cont.newton_iterations"),
                target_u=None if c.get("target_u") is None else real(c["target_u"], "cont.target_u"))
            if cont.param == "loss" and not (0.0 <= cont.value <= 1.0 and 0.0 <= cont.u <= 1.0):
                raise bad(f"cont.value = {cont.value!r} (a loss weight in [0, 1])")
            if cont.param == "nu" and not cont.value > 0:
                raise bad(f"cont.value = {cont.value!r} (nu > 0)")
        newton = None
        n = r.get("newton")
        if n is not None:
            if not isinstance(n, dict) or not isinstance(n.get("history"), list):
                raise bad("newton.history")
            newton = NewtonCursor(count(n.get("iteration"), "newton.iteration"),
                                  [real(f, "newton.history", 0.0) for f in n["history"]])
            if len(newton.history) != newton.iteration + 1:
                raise bad(f"newton.history has {len(newton.history)} residuals at iteration {newton.iteration}")
        p = r.get("params") or {}
        if not isinstance(p, dict):
            raise bad("params")
        nu = None if p.get("nu") is None else real(p["nu"], "params.nu", 0.0)
        lw = None if p.get("loss_weight") is None else real(p["loss_weight"], "params.loss_weight", 0.0, 1.0)
        if nu is not None and nu <= 0:
            raise bad(f"params.nu = {nu}")
        return cls(level=level, mesh=None if r.get("mesh") is None else tuple(r["mesh"]), attempt=attempt,
                   prior=r.get("prior"), phase=phase, record=rec, cont=cont, newton=newton, history=hist,
                   nu=nu, loss_weight=lw)
