"""How many layers for how many nodes (METHOD.md sections 6 and 8): the rules and what a
run shows. Serial numpy/scipy on whole arrays (small meshes, rank 0); the collective runs
are in :mod:`mfc_hpc.studies.stability_runs`. Derivations: ``mfc_hpc/docs/stability.md``.

Two conditions keep the trained network and its discrete density well behaved, for
``d = 1, 2``:

* **Markov / positivity**: the midpoint layer map of the density is a non-negative matrix
  when ``dt * max_i r_i <= 2``, ``r_i = sum_k sum_{j=i+-e_k} (nu/(h_k w^(k)_{i_k})) E_ij`` the
  outflow rate (sufficient, not necessary);
* **invertible blocks**: ``x -> x + dt U_n(x)`` (``U_n`` the piecewise-linear interpolant of
  the drift on the Kuhn triangulation) is invertible iff ``det(I + dt grad U_n) > 0`` on
  every simplex; ``1 + dt (b_{i+1} - b_i)/h > 0`` when ``d = 1``.

Three rules predict them:

* **a priori** (:func:`a_priori`): the adjoint frozen at its terminal condition (the loss
  gradient bounds the adjoint gradient); for a KL terminal cost that condition is read on
  the uncontrolled flow's terminal density; for the bridge (a constraint, no formula for
  ``phi^N``) no a priori bound is available and the verdict says so (``stable = None``).
* **a posteriori** (:func:`a_posteriori`): the same bounds on a solution's diagnostics.
* **sharp** (:func:`predict`): the target mesh's own adjoint and density by the layered
  solve of :mod:`mfc_hpc.numerics.layered`, with the forward-backward coupling (class
  fractions, ``F'``, a terminal cost that reads ``rho^N``) frozen at a cheap coarse
  solve's densities, transferred by cubic splines; the verdict is then what a run would
  show: positivity to the tolerance, invertibility, accuracy. For one class, ``eta = 0``,
  ``F = 0`` and a fixed loss nothing is frozen and the layered solve is the exact discrete
  solution (no coarse solve needed).

What a run shows (:func:`observed`): Newton converged, ``min rho >= -tol * max rho``
(:data:`POSITIVITY_TOL`), every block invertible, and (with an accuracy function) test
accuracy not below the zero network's by more than :data:`ACCURACY_TOL`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..numerics.depth import layers, split
from ..numerics.grid import BoxGeometry
from ..numerics.layered import exact_decoupling, layered_solve, transfer_levels
from ..numerics.model import Discretisation
from ..numerics.quantities import cell_det_excess, drift, outflow_rate
from ..numerics.terminal import BridgeTerminal
from ..numerics.training import forward_walk, TiltLayout
from ..problem.build import Problem

__all__ = ["MARKOV_LIMIT", "COMPRESSION_LIMIT", "SWEEPS", "SETTLE_TOL", "POSITIVITY_TOL", "ACCURACY_TOL", "FAILURES",
           "frozen_rate", "frozen_drift", "symbol", "amplification", "max_amplification",
           "FrozenAdjoint", "frozen_adjoint", "frozen_numbers", "invertibility_limit", "a_priori",
           "min_layers", "max_nodes", "a_posteriori", "observed", "state_numbers", "zero_network_state",
           "Reference", "needs_reference", "predict", "sharp_min_layers", "sharp_max_nodes", "scaled_nodes"]

#: ``dt * max outflow rate`` up to which the midpoint layer map is a Markov kernel
MARKOV_LIMIT = 2.0
#: ``max(1 - det(I + dt grad U))`` below which every extracted block is invertible
COMPRESSION_LIMIT = 1.0
#: a density counts as non-negative down to ``-POSITIVITY_TOL * max rho`` (docs/stability.md)
POSITIVITY_TOL = 1e-8
#: test accuracy may fall this far below the zero network's before it counts as a failure
ACCURACY_TOL = 0.01
#: forward-backward sweeps of the sharp rule (when something is frozen), and when they count
#: as settled (recorded, not required: the verdict is that of the last sweep)
SWEEPS = 3
SETTLE_TOL = 1e-8
#: the ways a point fails, in the order they are checked
FAILURES = ("newton", "positivity", "invertibility", "accuracy")

AccuracyFn = Callable[[Problem, np.ndarray], "float | None"]


# ------------------------------------------------------------------------------ frozen coefficients

def frozen_rate(U, h, nu: float):
    """Outflow rate ``(2 nu/h^2) cosh(U h/(2 nu))`` of an interior node under a frozen
    adjoint slope ``U`` along one axis (sum these over the axes for ``d = 2``)."""
    return 2.0 * nu / np.asarray(h) ** 2 * np.cosh(np.asarray(U) * np.asarray(h) / (2.0 * nu))


def frozen_drift(U, h, nu: float):
    """Drift ``b = (2 nu/h) sinh(U h/(2 nu))`` of the walk under a frozen slope ``U``."""
    return 2.0 * nu / np.asarray(h) * np.sinh(np.asarray(U) * np.asarray(h) / (2.0 * nu))


def symbol(theta, U: float, h: float, nu: float) -> np.ndarray:
    """Fourier symbol of the frozen 1-D generator ``W^{-1} A`` on ``rho``:
    ``(2 nu/h^2) [cosh y (cos theta - 1) - i sinh y sin theta]``, ``y = U h/(2 nu)``."""
    y = U * h / (2.0 * nu)
    theta = np.asarray(theta)
    return 2.0 * nu / h ** 2 * (np.cosh(y) * (np.cos(theta) - 1.0) - 1j * np.sinh(y) * np.sin(theta))


def amplification(theta, dt: float, U, h, nu: float, scheme: str = "midpoint") -> np.ndarray:
    """Amplification factor ``G`` of one layer of the linearised density equation.

    ``theta``, ``U``, ``h``: scalars/arrays for ``d = 1``, or tuples with one entry per axis
    (the symbol of the per-axis walk is the sum of the axes' symbols). Midpoint
    ``(1 + dt l/2)/(1 - dt l/2)``, implicit Euler ``1/(1 - dt l)``. The linearised adjoint
    has the conjugate symbol and the same ``|G|``.
    """
    if np.ndim(U) == 0:
        theta, U, h = (theta,), (U,), (h,)
    z = dt * sum(symbol(t, float(u), float(hh), nu) for t, u, hh in zip(theta, U, h))
    if scheme == "midpoint":
        return (1.0 + 0.5 * z) / (1.0 - 0.5 * z)
    if scheme == "euler":
        return 1.0 / (1.0 - z)
    raise ValueError(f"unknown scheme {scheme!r}")


def max_amplification(dt: float, U, h, nu: float, scheme: str = "midpoint", n: int = 181) -> dict:
    """``max |G|`` over ``theta in [0, pi]^d`` and the sawtooth factor ``G(pi, .., pi) =
    (1 - dt r)/(1 + dt r)`` (midpoint), ``r`` the frozen outflow rate summed over axes."""
    Us, hs = tuple(np.atleast_1d(U).tolist()), tuple(np.atleast_1d(h).tolist())
    grids = tuple(np.meshgrid(*[np.linspace(0.0, np.pi, n)] * len(Us), indexing="ij"))
    G = amplification(grids, dt, Us, hs, nu, scheme)
    corner = amplification((np.pi,) * len(Us), dt, Us, hs, nu, scheme)
    return {"max_abs": float(np.abs(G).max()), "sawtooth": float(np.real(corner))}


# ------------------------------------------------------------------------------ a priori

@dataclass
class FrozenAdjoint:
    """The adjoint a priori: ``phi[c, *i]`` (``None`` when no bound is available) and where it
    comes from."""

    phi: np.ndarray | None
    source: str


def _uncontrolled_terminal(problem: Problem) -> np.ndarray:
    """``rho^N[c, *i]`` of the uncontrolled flow (zero tilts: the data only diffused)."""
    d = problem.d
    return forward_walk(problem.bd.rho0, TiltLayout(d).zeros(), d)[-1]


def frozen_adjoint(problem: Problem) -> FrozenAdjoint:
    """``phi_c = Phi_c`` frozen at the terminal condition: ``-G_c`` for a fixed loss, the KL
    condition ``-gamma (log(rho^N/q) + 1)`` on the uncontrolled flow's ``rho^N``, and no bound
    for the bridge (its ``phi^N`` is fixed by the constraint ``rho^N = q``, not by a formula)."""
    bd, kind = problem.bd, problem.cfg.loss.kind
    sel = (slice(None),) * problem.ndim
    if bd.fixed_loss:
        return FrozenAdjoint(bd.terminal(bd.rho0, sel), "terminal loss -G")
    if kind == "kl":
        return FrozenAdjoint(bd.terminal(_uncontrolled_terminal(problem), sel),
                             "KL terminal condition on the uncontrolled flow")
    return FrozenAdjoint(None, f"no a priori bound for loss.kind = {kind!r} (phi^N is set by the constraint "
                               "rho^N = q); use the sharp rule or the a posteriori check")


@dataclass
class FrozenNumbers:
    """Per-unit-depth numbers of a frozen adjoint on one mesh: the largest outflow rate,
    ``tr`` and ``det`` of ``grad U`` on every simplex (so ``det(I + dt grad U) = 1 + dt tr +
    dt^2 det``), the largest drift, the largest loss slope per axis and the cell Peclet number."""

    rate: float
    tr: np.ndarray
    det: np.ndarray
    velocity: float
    loss_gradient: tuple[float, ...]
    cell_peclet: float


def frozen_numbers(d: Discretisation, phi: np.ndarray) -> FrozenNumbers:
    """The scheme's own outflow rates, drift and simplex Jacobians for the frozen adjoint
    ``phi[c, *i]``, each class alone (one class, ``eta = 0``: tilt ``exp((phi_j - phi_i)/(2 nu))``);
    the shared tilt has a convex combination of the class slopes in its exponent, so the
    largest class value bounds the mixture's. Every node and cell counts, walls included:
    the solutions' largest compression sits in the wall cells of the last layers.
    """
    one = dataclasses.replace(d, K=1, eta=0.0, N=1)
    geom = BoxGeometry(d.grid, (0,) * d.ndim, d.grid.nodes)
    ph = np.asarray(phi, dtype=float)[:, None]  # classes as levels of a one-class problem
    rho = np.ones_like(ph)
    with np.errstate(over="ignore", invalid="ignore"):
        b = drift(rho, ph, geom, one)  # [c, k, *i]
        rate = float(np.nanmax(outflow_rate(rho, ph, geom, one)))
        e1 = cell_det_excess(b, d.grid.h, 1.0)
        e2 = cell_det_excess(b, d.grid.h, 2.0)
    det = 0.5 * (e2 - 2.0 * e1)  # ex(dt) = dt tr + dt^2 det
    tr = e1 - det
    slopes = tuple(float(np.abs(np.diff(ph, axis=2 + k)).max() / d.grid.h[k]) if d.grid.nodes[k] > 1 else 0.0
                   for k in range(d.ndim))
    pe = max(s * h / d.nu for s, h in zip(slopes, d.grid.h))
    return FrozenNumbers(rate if np.isfinite(rate) else np.inf, tr, det,
                         float(np.nanmax(np.abs(b))) if np.isfinite(b).all() else np.inf, slopes, float(pe))


def invertibility_limit(tr: np.ndarray, det: np.ndarray) -> float:
    """The largest ``dt`` such that ``1 + s tr + s^2 det > 0`` on every simplex for all
    ``0 <= s < dt`` (the first positive root, ``inf`` if none)."""
    tr = np.asarray(tr, dtype=float).ravel()
    det = np.asarray(det, dtype=float).ravel()
    if not (np.all(np.isfinite(tr)) and np.all(np.isfinite(det))):
        return 0.0
    scale = np.maximum(np.abs(tr), np.sqrt(np.abs(det)))
    with np.errstate(over="ignore"):
        lin = np.abs(det) <= 1e-12 * np.maximum(scale, 1e-300) ** 2
    out = np.full(tr.shape, np.inf)
    m = lin & (tr < 0)
    out[m] = -1.0 / tr[m]
    q = ~lin
    disc = tr[q] ** 2 - 4.0 * det[q]
    real = disc >= 0
    sq = np.sqrt(np.where(real, disc, 0.0))
    # roots of det s^2 + tr s + 1 = 0 written without cancellation: s = 2 / (-tr -+ sq)
    r1 = np.where(real, 2.0 / np.where(-tr[q] - sq != 0, -tr[q] - sq, np.nan), np.nan)
    r2 = np.where(real, 2.0 / np.where(-tr[q] + sq != 0, -tr[q] + sq, np.nan), np.nan)
    r = np.stack([r1, r2])
    r = np.where(r > 0, r, np.inf)
    out[q] = np.nanmin(r, axis=0)
    return float(out.min()) if out.size else np.inf


def a_priori(problem: Problem, frozen: FrozenAdjoint | None = None) -> dict:
    """The a priori verdict for the problem's ``(N, M)`` before solving (METHOD.md 6, 8):
    ``stable`` iff ``dt * rate <= 2`` and every simplex keeps ``det(I + dt grad U) > 0`` for
    the frozen adjoint; ``None`` when no bound is available (the bridge). Also the simple
    bound ``dt (2 nu sum_k 1/h_k^2 + sum_k |b|/h_k)``, ``nu dt sum_k 1/h_k^2``, the cell Peclet
    number and the frozen-coefficient amplification."""
    d = problem.d
    fa = frozen or frozen_adjoint(problem)
    base = {"nodes": _nodes(d), "layers": d.N, "h": _one(d.grid.h), "dt": d.dt, "source": fa.source}
    if fa.phi is None:
        return {**base, "available": False, "stable": None, "markov_ok": None, "invertible_ok": None,
                "dt_outflow_rate": None, "dt_compression": None, "min_layers": None}
    f = frozen_numbers(d, fa.phi)
    dt = d.dt
    with np.errstate(over="ignore", invalid="ignore"):
        ex = dt * f.tr + dt * dt * f.det
        comp = float((-ex).max()) if ex.size else -np.inf
    lim = invertibility_limit(f.tr, f.det)
    markov = dt * f.rate
    inv2 = sum(1.0 / h ** 2 for h in d.grid.h)
    amp = max_amplification(dt, f.loss_gradient, d.grid.h, d.nu, d.scheme) if np.isfinite(f.cell_peclet) \
        and f.cell_peclet < 1400 else {"max_abs": 1.0, "sawtooth": -1.0}
    mk = bool(markov <= MARKOV_LIMIT)
    inv = bool(dt < lim and comp < COMPRESSION_LIMIT)
    return {**base, "available": True,
            "frozen": {"velocity": f.velocity, "loss_gradient": list(f.loss_gradient), "outflow_rate": f.rate,
                       "cell_peclet": f.cell_peclet, "invertibility_dt": lim},
            "dt_outflow_rate": markov, "dt_compression": comp,
            "simple_bound": dt * (2.0 * d.nu * inv2 + sum(f.velocity / h for h in d.grid.h)),
            "parabolic": d.nu * dt * inv2, "amplification": amp,
            "markov_ok": mk, "invertible_ok": inv, "stable": bool(mk and inv),
            "min_layers": _min_layers_from(f, d)}


def _min_layers_from(f: FrozenNumbers, d: Discretisation, cap: float = 1e9) -> int | None:
    lim = invertibility_limit(f.tr, f.det)
    need_m = d.T * f.rate / MARKOV_LIMIT
    need_i = d.T / lim if lim > 0 else np.inf
    if not (np.isfinite(need_m) and np.isfinite(need_i)) or max(need_m, need_i) > cap:
        return None  # tilts beyond reason: no practical number of layers helps on this node mesh
    n_m = int(np.ceil(need_m - 1e-12))
    n_i = int(np.floor(need_i + 1e-12)) + 1 if np.isfinite(lim) else 1
    return max(1, n_m, n_i)


def min_layers(problem: Problem) -> int | None:
    """Smallest ``N`` with an a priori stable verdict on the problem's node mesh (``None``:
    no bound available, or tilts beyond reason: more than 1e9 layers)."""
    fa = frozen_adjoint(problem)
    if fa.phi is None:
        return None
    return _min_layers_from(frozen_numbers(problem.d, fa.phi), problem.d)


def scaled_nodes(nodes0: tuple[int, ...], m: int) -> tuple[int, ...]:
    """Node counts with ``m`` along axis 1 and the other axes scaled in proportion."""
    r = (m - 1) / (nodes0[0] - 1)
    return tuple(max(3, int(round((n - 1) * r)) + 1) for n in nodes0)


def _search_max(ok: Callable[[int], bool], lo: int, cap: int, samples: int) -> int | None:
    """Largest ``m`` in ``[lo, cap]`` with ``ok(m)`` among geometric samples, refined by
    bisection up to the next sample (stable node counts form an interval: too few nodes
    blow the tilts up, too many the rates)."""
    cand = np.unique(np.geomspace(lo, cap, samples).astype(int))
    good = [bool(ok(int(m))) for m in cand]
    if not any(good):
        return None
    k = max(i for i, g in enumerate(good) if g)
    if k == cand.size - 1:
        return int(cand[k])
    a, b = int(cand[k]), int(cand[k + 1])
    while b - a > 1:
        mid = (a + b) // 2
        a, b = (mid, b) if ok(mid) else (a, mid)
    return a


def max_nodes(problem: Problem, cap: int = 1 << 14, samples: int = 48) -> int | None:
    """Largest node count ``M`` (axis 1; the others scaled alike) up to ``cap`` with an a
    priori stable verdict for the problem's ``N`` (``None`` if none or no bound)."""
    if frozen_adjoint(problem).phi is None:
        return None
    nodes0 = problem.grid.nodes
    return _search_max(lambda m: bool(a_priori(problem.on_mesh(scaled_nodes(nodes0, m)))["stable"]),
                       5, cap, samples)


# ------------------------------------------------------------------------------ a posteriori, observed

def a_posteriori(diag: dict) -> dict:
    """The two bounds on a solution's diagnostics (``dt_max_outflow_rate``, ``dt_max_compression``)."""
    m, c = diag["dt_max_outflow_rate"], diag["dt_max_compression"]
    return {"dt_outflow_rate": m, "dt_compression": c, "markov_ok": bool(m <= MARKOV_LIMIT),
            "invertible_ok": bool(c < COMPRESSION_LIMIT), "stable": bool(m <= MARKOV_LIMIT and c < COMPRESSION_LIMIT)}


def observed(converged: bool, diag: dict | None, max_density: float | None, positivity_tol: float = POSITIVITY_TOL,
             accuracy: float | None = None, baseline: float | None = None,
             accuracy_tol: float = ACCURACY_TOL) -> dict:
    """What a run shows: ``failures`` lists the ways it failed (:data:`FAILURES`), ``stable``
    iff none. Positivity: ``min rho >= -positivity_tol * max rho``; invertibility:
    ``max(1 - det) < 1``; accuracy (when both are given): ``accuracy >= baseline - accuracy_tol``."""
    fails: list[str] = []
    out: dict = {"converged": bool(converged), "positive": None, "invertible": None, "accurate": None}
    if not converged or diag is None or not diag.get("finite", True):
        fails.append("newton")
    else:
        out["positive"] = bool(diag["min_density"] >= -positivity_tol * float(max_density))
        out["invertible"] = bool(diag["dt_max_compression"] < COMPRESSION_LIMIT)
        if not out["positive"]:
            fails.append("positivity")
        if not out["invertible"]:
            fails.append("invertibility")
        if accuracy is not None and baseline is not None:
            out["accurate"] = bool(accuracy >= baseline - accuracy_tol)
            if not out["accurate"]:
                fails.append("accuracy")
    out.update(failures=fails, stable=not fails)
    return out


def state_numbers(Z: np.ndarray, d: Discretisation) -> dict:
    """The stability numbers of a whole state ``Z[n, *i, a]`` as the diagnostics compute them
    on the distributed mesh: min and max density, ``dt * max outflow rate`` and
    ``max(1 - det(I + dt grad U))`` over the layers' midpoints, and whether all is finite."""
    K = d.K
    geom = BoxGeometry(d.grid, (0,) * d.ndim, d.grid.nodes)
    rho, phi = split(layers(Z, 0.5), K)
    with np.errstate(over="ignore", invalid="ignore"):
        rate = float(np.max(outflow_rate(rho, phi, geom, d)))
        ex = cell_det_excess(drift(rho, phi, geom, d), d.grid.h, d.dt)
    finite = bool(np.all(np.isfinite(Z)) and np.isfinite(rate) and np.all(np.isfinite(ex)))
    return {"min_density": float(np.min(Z[..., :K])), "max_density": float(np.max(Z[..., :K])),
            "dt_max_outflow_rate": d.dt * rate if finite else np.inf,
            "dt_max_compression": float((-ex).max()) if finite else np.inf, "finite": finite}


def zero_network_state(Z: np.ndarray, K: int) -> np.ndarray:
    """The state of the zero network next to ``Z``: the same densities, ``phi = 0`` (all tilts 1,
    every block the identity); the accuracy baseline."""
    Z0 = np.array(Z, dtype=float, copy=True)
    Z0[..., K:] = 0.0
    return Z0


# ------------------------------------------------------------------------------ the sharp rule

@dataclass
class Reference:
    """A coarse solve whose densities (and, for the bridge, terminal adjoint) the sharp rule
    freezes: the state ``Z[n, *i, a]`` on the discretisation ``d``."""

    Z: np.ndarray
    d: Discretisation
    converged: bool
    label: str

    def on(self, d: Discretisation) -> np.ndarray:
        """The reference state on another mesh of the same box and depth."""
        return transfer_levels(self.Z, self.d, d)


def needs_reference(problem: Problem) -> bool:
    """Whether the sharp rule freezes anything (else it is exact and needs no coarse solve)."""
    return not exact_decoupling(problem.d, problem.bd.fixed_loss)


def _frozen_inputs(problem: Problem, ref: Reference | None) -> tuple[np.ndarray, np.ndarray]:
    """``(rho_frozen[n, c, *i], phi^N[c, *i])`` on the problem's mesh."""
    d, bd = problem.d, problem.bd
    K = d.K
    sel = (slice(None),) * d.ndim
    if not needs_reference(problem):
        return np.zeros((d.N + 1,) + bd.rho0.shape), bd.terminal(bd.rho0, sel)
    if ref is None:
        raise ValueError("the sharp rule needs a reference solve for this problem (needs_reference)")
    Zt = ref.on(d)
    rho = np.maximum(np.moveaxis(Zt[..., :K], -1, 1), 0.0)
    rho[0] = bd.rho0
    if isinstance(bd, BridgeTerminal):
        phiN = np.moveaxis(Zt[-1, ..., K:], -1, 0)  # the bridge: phi^N of the reference
    else:
        phiN = bd.terminal(rho[-1], sel)
    return rho, phiN


def predict(problem: Problem, ref: Reference | None = None, positivity_tol: float = POSITIVITY_TOL,
            accuracy: AccuracyFn | None = None, accuracy_tol: float = ACCURACY_TOL, max_sweeps: int = SWEEPS,
            settle_tol: float = SETTLE_TOL, require_settled: bool = False, with_state: bool = False) -> dict:
    """The sharp verdict for the problem's mesh: the layered solve of
    :mod:`mfc_hpc.numerics.layered` on this mesh, then the observation of its state
    (:func:`observed` on :func:`state_numbers`).

    Nothing frozen (one class, ``eta = 0``, ``F = 0``, fixed loss): one layered solve, the
    exact discrete solution. Otherwise the coupling starts frozen at ``ref`` (a coarse
    solve, transferred) and up to ``max_sweeps`` forward-backward sweeps update it from the
    walk's densities (and a KL terminal condition from ``rho^N``), stopping early when the
    densities change by less than ``settle_tol`` of their maximum (a fixed point solves this
    mesh's scheme); the verdict is that of the last sweep, ``change`` says how far from a
    fixed point it is (``require_settled``: count an unsettled prediction as a Newton
    failure instead). A layer solve that fails counts as a predicted Newton failure. The
    bridge's ``phi^N`` stays the reference's (no update).
    """
    d, bd = problem.d, problem.bd
    K = d.K
    rho_f, phiN = _frozen_inputs(problem, ref)
    exact = not needs_reference(problem)
    bridge = isinstance(bd, BridgeTerminal)
    sel = (slice(None),) * d.ndim
    settled, change, sweeps, its = exact, None, 0, 0
    res = None
    for sweeps in range(1, (1 if exact else max_sweeps) + 1):
        res = layered_solve(bd.rho0, phiN, rho_f, d, exact=exact,
                            guess=None if res is None else np.moveaxis(res.Z[..., K:], -1, 1))
        its += res.newton_iterations
        if not res.converged or exact:
            break
        rho_new = np.moveaxis(res.Z[..., :K], -1, 1)
        change = float(np.abs(rho_new - rho_f).max() / max(float(np.abs(rho_new).max()), 1e-300))
        if change <= settle_tol:
            settled = True
            break
        rho_f = np.maximum(rho_new, 0.0)
        if not bridge:
            phiN = bd.terminal(rho_f[-1], sel)
    out: dict = {"exact": exact, "reference": None if ref is None or exact else ref.label,
                 "layer_solves_converged": res.converged, "failed_layer": res.failed_layer,
                 "newton_iterations": its, "sweeps": sweeps, "settled": bool(settled and res.converged),
                 "change": change}
    if not res.converged or (require_settled and not out["settled"]):
        out.update(observed(False, None, None))
        out.update(min_density=None, max_density=None, dt_outflow_rate=None, dt_compression=None,
                   accuracy=None, baseline_accuracy=None)
        return out
    num = state_numbers(res.Z, d)
    acc = base = None
    if accuracy is not None and num["finite"]:
        acc = accuracy(problem, res.Z)
        base = accuracy(problem, zero_network_state(res.Z, K)) if acc is not None else None
    out.update(observed(num["finite"], num, num["max_density"], positivity_tol, acc, base, accuracy_tol))
    out.update(min_density=num["min_density"], max_density=num["max_density"],
               dt_outflow_rate=num["dt_max_outflow_rate"], dt_compression=num["dt_max_compression"],
               accuracy=None if acc is None else float(acc), baseline_accuracy=None if base is None else float(base))
    if with_state:
        out["Z"] = res.Z
    return out


def sharp_min_layers(problem: Problem, ref: Reference | None = None, cap: int = 4096,
                     positivity_tol: float = POSITIVITY_TOL, max_sweeps: int = SWEEPS) -> int | None:
    """Smallest ``N <= cap`` the sharp rule calls stable on the problem's node mesh: the first
    stable ``N`` of ``1, 2, 4, ..`` refined by bisection from the unstable one before it
    (``None`` if none up to ``cap``). Accuracy is not part of this search."""
    def ok(N: int) -> bool:
        return bool(predict(problem.on_mesh(layers=N), ref, positivity_tol, max_sweeps=max_sweeps)["stable"])

    N, prev = 1, 0
    while N <= cap and not ok(N):
        prev, N = N, 2 * N
    if N > cap:
        return None
    lo, hi = prev, N  # lo unstable (or 0), hi stable
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def sharp_max_nodes(problem: Problem, ref: Reference | None = None, cap: int = 1025, samples: int = 16,
                    positivity_tol: float = POSITIVITY_TOL, max_sweeps: int = SWEEPS) -> int | None:
    """Largest node count ``M`` (axis 1; the others scaled alike) up to ``cap`` the sharp rule
    calls stable for the problem's ``N`` (geometric samples from 5, refined by bisection)."""
    nodes0 = problem.grid.nodes
    return _search_max(lambda m: bool(predict(problem.on_mesh(scaled_nodes(nodes0, m)), ref, positivity_tol,
                                              max_sweeps=max_sweeps)["stable"]), 5, cap, samples)


def _one(v: tuple):
    return v[0] if len(v) == 1 else list(v)


def _nodes(d: Discretisation):
    return _one(d.grid.nodes)
