"""The preserved structure of the scheme, measured (METHOD.md sections 3 and 4).

Kernels that act on a whole solution ``Z[n, i, a]`` of the depth-time mesh (gathered to
one array, small and moderate meshes) and report what the midpoint scheme keeps and the
implicit Euler variant (``scheme = "euler"``) loses:

* the drift of the discrete Hamiltonian across levels, ``max_n |H_h(z^n) - H_h(z^0)|``
  (``O(dt^2)`` for the midpoint rule on a fixed node mesh, ``O(dt)`` for Euler: the
  backward-error statement);
* the discrete symplectic form ``omega^n = sum_{c,i} w_i (a_rho b_phi - a_phi b_rho)`` of
  two solutions ``a, b`` of the linearised scheme, and its variation across levels
  relative to ``S = max_n sum_{c,i} w_i (|a_rho b_phi| + |a_phi b_rho|)``;
* exact discrete mass ``sum_i w_i rho^n_{c,i} = pi_c``;
* the residual of the hydrodynamic (Euler-Poincare) pair of section 3 on the discrete
  solution (one class, ``eta = 0``): with the current velocity ``v = u - nu d_x log rho``,
  ``d_t rho + d_x(rho v) = 0`` and ``d_t v + v d_x v + d_x Q - d_x F'(rho) = 0``,
  ``Q = 2 nu^2 d_xx sqrt(rho) / sqrt(rho) = nu^2 (d_xx l + (d_x l)^2 / 2)``, ``l = log rho``.

The linearised solutions solve ``J a = r_a``, ``J b = r_b`` with the exact Jacobian ``J``
at the converged state, where ``r_a`` perturbs the initial-condition rows
(``rho^0 <- rho^0 + delta_rho``) and ``r_b`` the terminal rows (``phi^N <- phi^N + delta_phi``);
:func:`perturbations` builds both. :func:`solve_serial` is a small scipy Newton on
:func:`~mfc_hpc.scheme.serial_jacobian` (a reference independent of PETSc for tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scheme import (BoundaryData, Discretisation, _split, drift, hamiltonian, node_weights,
                     serial_jacobian, serial_residual)

__all__ = ["SerialResult", "solve_serial", "perturbations", "linearised_serial", "symplectic_form",
           "symplectic_variation", "hamiltonian_levels", "mass_error", "euler_poincare_residual",
           "structure_record", "observed_order"]


# ------------------------------------------------------------------------------ solves

@dataclass
class SerialResult:
    """A serial Newton solve: the state ``Z[n, i, a]`` and how it went."""

    Z: np.ndarray
    converged: bool
    iterations: int
    residual: float


def solve_serial(d: Discretisation, bd: BoundaryData, Z0: np.ndarray | None = None, *,
                 rtol: float = 1e-11, max_it: int = 40, positivity: float = 0.9) -> SerialResult:
    """Newton with the exact Jacobian and a direct sparse solve (serial reference).

    From ``Z = 0`` the first Newton step is the uncontrolled flow (the Jacobian at ``z = 0``
    is the plain walk and the discrete heat operator). Steps are capped so every
    ``rho_c`` stays positive (not for one class with ``eta = 0``, METHOD.md section 7)
    and halved until the residual norm decreases. Converged when
    ``|F| <= rtol * |F(0)|``.
    """
    import scipy.sparse.linalg as spla

    shape = (d.N + 1, d.M, 2 * d.K)
    Z = np.zeros(shape) if Z0 is None else np.array(Z0, dtype=float)
    F = serial_residual(Z, d, bd)
    f0 = float(np.linalg.norm(serial_residual(np.zeros(shape), d, bd))) or 1.0
    f = float(np.linalg.norm(F))
    it = 0
    while f > rtol * f0 and it < max_it:
        J = serial_jacobian(Z, d, bd).tocsc()
        dz = spla.spsolve(J, F.ravel()).reshape(shape)
        a = 1.0
        if not d.unit_fraction:
            R, dR = Z[..., :d.K], dz[..., :d.K]
            grow = (dR > 0) & (R > 0)
            if grow.any():
                a = min(1.0, float((positivity * R[grow] / dR[grow]).min()))
        for _ in range(30):
            Zt = Z - a * dz
            Ft = serial_residual(Zt, d, bd)
            ft = float(np.linalg.norm(Ft))
            if np.isfinite(ft) and ft < f:
                break
            a *= 0.5
        else:
            return SerialResult(Z, False, it, f / f0)
        Z, F, f = Zt, Ft, ft
        it += 1
    return SerialResult(Z, f <= rtol * f0, it, f / f0)


def perturbations(d: Discretisation, bd: BoundaryData) -> tuple[np.ndarray, np.ndarray]:
    """Right-hand sides ``r_a, r_b`` (``[n, i, a]``) of two linearised solutions.

    ``r_a`` perturbs the initial densities, ``delta_rho_c = rho_c(0, x) sin(pi xi)``
    (``xi = (x - x_L)/L``), ``r_b`` the terminal condition, ``delta_phi_c = (c + 1) cos(pi xi)``;
    each sits in its boundary rows scaled by ``w_i`` like the residual.
    """
    K = d.K
    w = node_weights(d.h, d.M)
    xi = (d.x - d.x_min) / (d.x_max - d.x_min)
    ra = np.zeros((d.N + 1, d.M, 2 * K))
    rb = np.zeros_like(ra)
    ra[0, :, :K] = (w * bd.rho0 * np.sin(np.pi * xi)).T
    rb[-1, :, K:] = (w * np.arange(1, K + 1)[:, None] * np.cos(np.pi * xi)).T
    return ra, rb


def linearised_serial(Z: np.ndarray, d: Discretisation, bd: BoundaryData
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The two linearised solutions ``a = J^{-1} r_a``, ``b = J^{-1} r_b`` at ``Z`` (serial LU)."""
    import scipy.sparse.linalg as spla

    lu = spla.splu(serial_jacobian(Z, d, bd).tocsc())
    ra, rb = perturbations(d, bd)
    return lu.solve(ra.ravel()).reshape(Z.shape), lu.solve(rb.ravel()).reshape(Z.shape)


# ------------------------------------------------------------------------------ invariants

def symplectic_form(a: np.ndarray, b: np.ndarray, d: Discretisation) -> tuple[np.ndarray, np.ndarray]:
    """``omega^n`` and ``S^n = sum_{c,i} w_i (|a_rho b_phi| + |a_phi b_rho|)`` per level."""
    K = d.K
    w = node_weights(d.h, d.M)[None, :, None]
    p = a[..., :K] * b[..., K:]
    q = a[..., K:] * b[..., :K]
    return (w * (p - q)).sum(axis=(1, 2)), (w * (np.abs(p) + np.abs(q))).sum(axis=(1, 2))


def symplectic_variation(a: np.ndarray, b: np.ndarray, d: Discretisation) -> dict:
    """``max_n |omega^n - omega^0| / max_n S^n`` and the per-level relative deviations."""
    om, S = symplectic_form(a, b, d)
    ref = float(S.max()) or 1.0
    dev = np.abs(om - om[0]) / ref
    return {"omega": om.tolist(), "reference": ref, "relative_deviation": dev.tolist(),
            "relative_variation": float(dev.max())}


def hamiltonian_levels(Z: np.ndarray, d: Discretisation) -> np.ndarray:
    """``H_h(z^n)`` at every level ``n = 0..N``."""
    rho, phi = _split(Z, d.K)
    return hamiltonian(rho, phi, node_weights(d.h, d.M), d)


def mass_error(Z: np.ndarray, d: Discretisation, bd: BoundaryData) -> float:
    """``max_{n,c} |sum_i w_i rho^n_{c,i} - pi_c| / sum_c pi_c``."""
    w = node_weights(d.h, d.M)
    mass = np.einsum("i,nic->nc", w, Z[..., :d.K])
    pi = bd.rho0 @ w
    return float(np.abs(mass - pi).max() / max(pi.sum(), 1e-300))


def euler_poincare_residual(Z: np.ndarray, d: Discretisation, cut: float = 1e-8) -> dict | None:
    """Residual of the hydrodynamic pair of METHOD.md section 3 on the discrete solution.

    One class with ``eta = 0`` only (``u = d_x phi``); ``None`` otherwise. At every level
    ``u`` is the layer drift ``b_i`` and ``v = b - nu D_x l`` with central differences
    ``D_x``; both equations are evaluated at the half levels ``n + 1/2`` (depth difference,
    level averages), on nodes ``2..M-3`` whose stencil has ``rho > cut * max rho``.
    Norms are ``rho``-weighted: ``|r_v| = (sum_n dt sum_i w_i rho r_v^2)^(1/2)`` over the same
    norm of ``|d_t v| + |v d_x v| + |d_x Q| + |d_x F'|`` (relative), and the continuity
    residual in ``L^1`` over ``sum_n dt sum_i w_i |d_t rho|`` + ``|d_x (rho v)|``.
    """
    if not d.unit_fraction:
        return None
    h, dt, nu = d.h, d.dt, d.nu
    rho, phi = _split(Z, 1)
    r = rho[:, 0]
    ok = r > cut * r.max()
    l = np.log(np.where(ok, r, 1.0))
    b = drift(rho, phi, d)  # [n, i]

    def dx(f: np.ndarray) -> np.ndarray:  # central difference on nodes 1..M-2
        out = np.zeros_like(f)
        out[:, 1:-1] = (f[:, 2:] - f[:, :-2]) / (2.0 * h)
        return out

    lx = dx(l)
    lxx = np.zeros_like(l)
    lxx[:, 1:-1] = (l[:, 2:] - 2.0 * l[:, 1:-1] + l[:, :-2]) / h ** 2
    v = b - nu * lx
    Q = nu ** 2 * (lxx + 0.5 * lx ** 2)
    dF = d.running.dF(r)
    vm, rm = 0.5 * (v[1:] + v[:-1]), 0.5 * (r[1:] + r[:-1])
    vt = (v[1:] - v[:-1]) / dt
    adv = vm * dx(vm)
    Qx = dx(0.5 * (Q[1:] + Q[:-1]))
    Fx = dx(0.5 * (dF[1:] + dF[:-1]))
    rv = vt + adv + Qx - Fx
    rt = (r[1:] - r[:-1]) / dt
    flux = dx(rm * vm)
    rc = rt + flux
    # stencil i-2..i+2 inside the mesh and resolved at both levels
    good = ok[1:] & ok[:-1]
    mask = np.zeros_like(good)
    mask[:, 2:-2] = good[:, :-4] & good[:, 1:-3] & good[:, 2:-2] & good[:, 3:-1] & good[:, 4:]
    w = node_weights(h, d.M)[None, :] * mask * dt
    scale_v = np.abs(vt) + np.abs(adv) + np.abs(Qx) + np.abs(Fx)
    nv = float(np.sqrt((w * rm * rv ** 2).sum()))
    sv = float(np.sqrt((w * rm * scale_v ** 2).sum())) or 1.0
    nc = float((w * np.abs(rc)).sum())
    sc = float((w * (np.abs(rt) + np.abs(flux))).sum()) or 1.0
    return {"momentum": nv, "momentum_relative": nv / sv, "continuity": nc,
            "continuity_relative": nc / sc,
            "mass_covered": float((w * rm).sum() / max((dt * node_weights(h, d.M) * rm).sum(), 1e-300))}


def structure_record(Z: np.ndarray, a: np.ndarray, b: np.ndarray, d: Discretisation,
                     bd: BoundaryData) -> dict:
    """Every structure measurement of one solution and its two linearised solutions."""
    H = hamiltonian_levels(Z, d)
    drift_H = float(np.abs(H - H[0]).max())
    return {
        "scheme": d.scheme, "nodes": d.M, "layers": d.N, "depth": d.T, "h": d.h, "dt": d.dt,
        "hamiltonian": H.tolist(),
        "hamiltonian_drift": drift_H,
        "hamiltonian_drift_relative": drift_H / max(float(np.abs(H).max()), 1e-300),
        "symplectic": symplectic_variation(a, b, d),
        "mass_error": mass_error(Z, d, bd),
        "min_density": float(Z[..., :d.K].min()),
        "euler_poincare": euler_poincare_residual(Z, d),
    }


def observed_order(x: list[float], y: list[float]) -> list[float | None]:
    """``log(y_{k+1}/y_k) / log(x_{k+1}/x_k)`` between consecutive points (None where undefined)."""
    out: list[float | None] = []
    for k in range(len(x) - 1):
        if y[k] > 0 and y[k + 1] > 0 and x[k] != x[k + 1]:
            out.append(float(np.log(y[k + 1] / y[k]) / np.log(x[k + 1] / x[k])))
        else:
            out.append(None)
    return out
