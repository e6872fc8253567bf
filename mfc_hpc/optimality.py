"""The discrete training problem whose optimality (KKT) system the scheme is (METHOD.md 4).

``N`` midpoint layers; the weights of layer ``n`` are the log-tilts
``theta_ij = log E_ij^{n+1/2}`` of the jumps between neighbouring nodes; the density of
every class is moved by the midpoint walk with those rates,

    w_i (rho^{n+1}_{c,i} - rho^n_{c,i}) = dt (nu/h) sum_j (rho^{n+1/2}_{c,j} E_ji - rho^{n+1/2}_{c,i} E_ij),

and the cost is

    J_h = sum_n dt sum_{i,j} 2 nu (nu/h) R_i^{n+1/2} c(E_ij) + sum_n dt sum_i w_i F(rho^{n+1/2})
          + sum_c sum_i w_i G_c(x_i) rho^N_{c,i},        c(s) = s log s - s + 1.

Serial numpy/scipy: it checks a solution, it is not the solver.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

from .scheme import BoundaryData, Discretisation, edge_terms, node_weights

__all__ = ["tilts_from_solution", "forward_walk", "training_cost", "cost_and_gradient",
           "kkt_state", "minimise", "symmetric_partner", "optimisation_guess",
           "serial_newton"]


def tilts_from_solution(Z: np.ndarray, d: Discretisation) -> tuple[np.ndarray, np.ndarray]:
    """Log-tilts ``(theta_r, theta_l)`` ``[n, p]`` of a solution ``Z[n, i, a]``: jumps
    ``p -> p+1`` and ``p+1 -> p`` at the midpoints ``z^{n+1/2}``."""
    mid = 0.5 * (Z[1:] + Z[:-1])
    rho = np.moveaxis(mid[..., :d.K], 2, 1)
    phi = np.moveaxis(mid[..., d.K:], 2, 1)
    e = edge_terms(rho, phi, d)
    two_nu = 2.0 * d.nu
    return e.Pr / two_nu, e.Pl / two_nu


def forward_walk(rho0: np.ndarray, theta_r: np.ndarray, theta_l: np.ndarray,
                 d: Discretisation) -> np.ndarray:
    """Densities ``rho[n, c, i]`` moved by the midpoint walk with the given log-tilts.

    Each layer solves the tridiagonal system ``(W - dt/2 A) rho^{n+1} = (W + dt/2 A) rho^n``
    with ``A`` the jump generator (the same for every class).
    """
    M, K, N = d.M, d.K, theta_r.shape[0]
    w = node_weights(d.h, M)
    k = d.nu / d.h
    rho = np.empty((N + 1, K, M))
    rho[0] = rho0
    for n in range(N):  # layers are sequential by nature; each is vectorised over nodes
        Er, El = np.exp(theta_r[n]), np.exp(theta_l[n])
        out = np.zeros(M)
        out[:-1] += Er
        out[1:] += El
        ab = np.zeros((3, M))  # banded W - dt/2 A
        ab[1] = w + 0.5 * d.dt * k * out
        ab[0, 1:] = -0.5 * d.dt * k * El  # row i, column i+1: inflow E_{i+1,i}
        ab[2, :-1] = -0.5 * d.dt * k * Er  # row i, column i-1: inflow E_{i-1,i}
        r = rho[n]
        Ar = -out * r
        Ar[:, :-1] += El * r[:, 1:]
        Ar[:, 1:] += Er * r[:, :-1]
        rho[n + 1] = solve_banded((1, 1), ab, (w * r + 0.5 * d.dt * k * Ar).T).T
    return rho


def training_cost(rho: np.ndarray, theta_r: np.ndarray, theta_l: np.ndarray,
                  d: Discretisation, bd: BoundaryData) -> dict:
    """``J_h`` split into kinetic, running and terminal parts for densities ``rho[n, c, i]``."""
    w = node_weights(d.h, d.M)
    mid = 0.5 * (rho[1:] + rho[:-1])
    R = mid.sum(axis=1) + d.eta
    two_nu, k = 2.0 * d.nu, d.nu / d.h

    def c(th: np.ndarray) -> np.ndarray:  # s log s - s + 1 at s = exp(th), no cancellation
        return np.exp(th) * th - np.expm1(th)

    kin = d.dt * two_nu * k * ((R[:, :-1] * c(theta_r)).sum() + (R[:, 1:] * c(theta_l)).sum())
    run = d.dt * (w * d.running.F(mid.sum(axis=1))).sum()
    term = bd.terminal_cost(rho[-1], w, 0, d.M)
    return {"kinetic": float(kin), "running": float(run), "terminal": float(term),
            "total": float(kin + run + term)}


# ----------------------------------------------------------------------------------
# Exact gradient by the discrete adjoint of the midpoint walk, the minimiser, and the
# KKT state (rho, phi) of any network
# ----------------------------------------------------------------------------------
#
# With ``B_n^{+-} = W +- dt/2 A_n`` the layer constraints are
# ``r^n = B_n^- rho^{n+1} - B_n^+ rho^n = 0`` (each class), and with multipliers ``mu^n``
# the Lagrangian is ``L = J_h + sum_n mu^n . r^n``. Write ``q^n_i`` for the derivative of
# the layer-``n`` cost ``dt [kin + sum_i w_i F]`` with respect to ``rho^{n+1/2}_{c,i}``
# (the same for every class):
#
#     q^n_i = dt 2 nu (nu/h) sum_{j = i+-1} c(E_ij) + dt w_i F'(rho_i^{n+1/2}).
#
# Stationarity in ``rho^N, rho^{N-1}, ..., rho^1`` is the backward sweep
#
#     w phi^N = -w s G,     (B_n^-)^T mu^n = w phi^{n+1} - q^n/2,
#     w phi^n = (B_n^+)^T mu^n - q^n/2,                          n = N-1, ..., 0,
#
# which *defines* ``phi^n`` at every level for any network. Adding the two rows of
# layer ``n`` gives ``mu^n = (phi^n + phi^{n+1})/2`` exactly, and subtracting them gives
# ``w (phi^{n+1} - phi^n) = -dt [A_n^T mu^n - q^n/dt] = -dt dPhi/drho``, where
# ``Phi(theta, rho, phi) = phi . A_theta rho - 2 nu (nu/h) sum R c(e^theta) - sum w F`` has
# ``H_h = max_theta Phi`` at ``theta = A(phi)/(2 nu R)``. The gradient
#
#     dJ_h/dtheta_e^n = dt (nu/h) e^theta [2 nu R_s theta - sum_c rho_{c,s} (mu_{c,t} - mu_{c,s})]
#
# (edge ``e: s -> t``, densities at ``n+1/2``) vanishes exactly when every tilt is the
# scheme's ``E = exp(A(phi^{n+1/2})/(2 nu R))``; then ``(rho, phi)`` solves the scheme
# (METHOD.md 4) and conversely. So ``phi`` of the scheme is the adjoint state of the walk.

def _check_fixed_terminal(bd: BoundaryData) -> None:
    if type(bd).terminal is not BoundaryData.terminal or \
            type(bd).terminal_cost is not BoundaryData.terminal_cost:
        raise NotImplementedError("optimality: only the fixed terminal loss phi^N = -s G "
                                  "(the default BoundaryData) is supported")


def _split_theta(theta: np.ndarray, d: Discretisation) -> tuple[np.ndarray, np.ndarray]:
    th = np.asarray(theta, dtype=float).reshape(2, d.N, d.M - 1)
    return th[0], th[1]


def _relent(th: np.ndarray) -> np.ndarray:
    """``c(e^th) = e^th th - e^th + 1`` without cancellation."""
    return np.exp(th) * th - np.expm1(th)


def _layer_bands(Er: np.ndarray, El: np.ndarray, w: np.ndarray, c: float):
    """Banded ``W - c A`` of one layer and ``out`` (sum of the tilts leaving each node)."""
    M = w.size
    out = np.zeros(M)
    out[:-1] += Er
    out[1:] += El
    ab = np.zeros((3, M))
    ab[1] = w + c * out
    ab[0, 1:] = -c * El
    ab[2, :-1] = -c * Er
    return ab, out


def _apply_AT(mu: np.ndarray, Er: np.ndarray, El: np.ndarray, k: float) -> np.ndarray:
    """``A^T mu`` for ``mu[c, i]``: ``sum_j (nu/h) E_ij (mu_j - mu_i)``."""
    dmu = mu[:, 1:] - mu[:, :-1]
    out = np.zeros_like(mu)
    out[:, :-1] += k * Er * dmu
    out[:, 1:] -= k * El * dmu
    return out


def _sweep(theta: np.ndarray, d: Discretisation, bd: BoundaryData, barrier: float = 0.0):
    """Forward walk, cost and the backward adjoint sweep: ``(rho, phi, mu, grad, cost)``.

    ``barrier = tau > 0`` adds ``tau sum_{n >= 1} sum_{c,i} w_i (-log rho^n_{c,i})`` to the
    cost (as ``cost["barrier"]``, also in ``cost["objective"]``) and to the gradient; then
    ``phi`` is the adjoint of that objective, not of ``J_h``."""
    _check_fixed_terminal(bd)
    tr, tl = _split_theta(theta, d)
    M, K, N = d.M, d.K, d.N
    w = node_weights(d.h, M)
    k, dt, two_nu = d.nu / d.h, d.dt, 2.0 * d.nu
    rho = forward_walk(bd.rho0, tr, tl, d)
    cost = training_cost(rho, tr, tl, d, bd)
    mid = 0.5 * (rho[1:] + rho[:-1])  # [n, c, i]
    tot = mid.sum(axis=1)
    R = tot + d.eta
    Er, El = np.exp(tr), np.exp(tl)
    cr, cl = _relent(tr), _relent(tl)
    q = np.zeros((N, M))
    q[:, :-1] += cr
    q[:, 1:] += cl
    q *= dt * two_nu * k
    if d.running.active:
        q += dt * w * d.running.dF(tot)
    phi = np.empty((N + 1, K, M))
    mu = np.empty((N, K, M))
    phi[N] = bd.terminal(rho[N], 0, M)
    half = 0.5 * dt * k
    pen = np.zeros_like(rho)  # d(barrier)/d rho^n
    cost["objective"] = cost["total"]
    if barrier > 0.0:
        with np.errstate(all="ignore"):
            cost["barrier"] = float(barrier * (w * -np.log(rho[1:])).sum())
        pen[1:] = -barrier * w / rho[1:]
        cost["objective"] = cost["total"] + cost["barrier"]
    for n in range(N - 1, -1, -1):
        ab, _ = _layer_bands(Er[n], El[n], w, half)
        abT = np.zeros_like(ab)  # the transpose: swap the off-diagonals
        abT[1] = ab[1]
        abT[0, 1:] = ab[2, :-1]
        abT[2, :-1] = ab[0, 1:]
        rhs = w * phi[n + 1] - 0.5 * q[n] - pen[n + 1]
        mu[n] = solve_banded((1, 1), abT, rhs.T).T
        phi[n] = (w * mu[n] + 0.5 * dt * _apply_AT(mu[n], Er[n], El[n], k) - 0.5 * q[n]) / w
    dmu = mu[..., 1:] - mu[..., :-1]  # [n, c, p]
    gr = dt * k * Er * (two_nu * R[:, :-1] * tr - (mid[..., :-1] * dmu).sum(axis=1))
    gl = dt * k * El * (two_nu * R[:, 1:] * tl + (mid[..., 1:] * dmu).sum(axis=1))
    grad = np.stack([gr, gl])
    return rho, phi, mu, grad, cost


def cost_and_gradient(theta: np.ndarray, d: Discretisation, bd: BoundaryData
                      ) -> tuple[float, np.ndarray]:
    """``J_h`` and its exact gradient with respect to the log-tilts.

    ``theta`` holds ``(theta_r, theta_l)``, each ``[N, M-1]``, as an array of shape
    ``[2, N, M-1]`` or flat; the gradient has the same shape as ``theta``.
    """
    theta = np.asarray(theta, dtype=float)
    _, _, _, g, c = _sweep(theta, d, bd)
    return c["total"], g.reshape(theta.shape)


def kkt_state(theta: np.ndarray, d: Discretisation, bd: BoundaryData) -> np.ndarray:
    """The state ``Z[n, i, a]`` of a network: ``rho`` moved by its walk, ``phi`` its adjoint.

    ``phi^N = -s G`` and, layer by layer backwards, ``phi^n`` from the adjoint sweep (see
    the comment above :func:`_sweep`). It solves the scheme exactly when ``theta`` is a
    stationary point of ``J_h``; for ``theta = tilts_from_solution(Z)`` of a solution
    ``Z`` it gives back ``Z``.
    """
    rho, phi, _, _, _ = _sweep(np.asarray(theta, dtype=float), d, bd)
    return np.concatenate([np.moveaxis(rho, 1, 2), np.moveaxis(phi, 1, 2)], axis=2)


def symmetric_partner(theta: np.ndarray, d: Discretisation) -> np.ndarray:
    """The network mirrored by ``x -> -x``: edge ``p`` -> ``M-2-p``, right <-> left jumps.

    For a mirror-symmetric problem (data and losses swapped between classes by the
    mirror) ``J_h`` of the partner equals ``J_h``; ``theta`` is symmetric when it equals
    its partner.
    """
    tr, tl = _split_theta(theta, d)
    return np.stack([tl[:, ::-1], tr[:, ::-1]]).reshape(np.shape(theta))


def minimise(d: Discretisation, bd: BoundaryData, theta0: np.ndarray | None = None, *,
             gtol: float = 1e-10, ftol: float = 0.0, maxiter: int = 20000, maxcor: int = 30,
             perturb: float = 0.0, seed: int = 0, bound: float = 20.0, restarts: int = 50,
             barrier: float = 0.0, callback=None) -> dict:
    """Minimise ``J_h`` over the log-tilts by L-BFGS (``scipy.optimize.minimize``, L-BFGS-B).

    Starts from ``theta0`` (default: the zero network, plain diffusion). ``perturb``
    adds ``N(0, perturb^2)`` noise to the start (to leave a symmetric saddle of a
    symmetric problem). ``gtol`` applies to the largest gradient entry divided by
    ``dt (nu/h) 2 nu`` (the scale of the kinetic curvature), so it reads as a
    log-tilt tolerance. The midpoint walk keeps densities non-negative only below its
    Markov bound on the rates; where ``R < 0`` the kinetic term is negative and ``J_h``
    unbounded below. Networks whose walk makes some ``rho_c <= -eta/K`` (``< 0`` when
    ``eta = 0``) are infeasible (``J_h`` is bounded below on the rest); the line search is sent back from them, and L-BFGS restarts with fresh memory (at most
    ``restarts`` times) when its line search fails there. Every log-tilt is kept in ``[-bound, bound]`` (L-BFGS-B box), so
    that trial steps of the line search cannot overflow the rates.

    ``barrier = tau > 0`` minimises ``J_h + tau sum w (-log rho)`` instead (interior
    iterates; ``history`` then holds that objective, ``cost`` is always ``J_h``).
    Caution: the zero network of a mirror-symmetric problem is symmetric and so is the
    gradient; symmetry is then broken only by round-off. ``perturb``/``barrier`` runs
    reached other (higher) critical points on the hard two-class case, see the report.

    Returns a dict: ``theta [2, N, M-1]``, ``rho [N+1, K, M]``, ``cost`` (J_h split),
    ``history`` (J_h per iteration), ``gradients`` (largest projected gradient entry per
    iteration, scaled as ``gtol``), ``iterations``, ``evaluations``, ``message``,
    ``gradient_max`` (scaled as ``gtol``), ``time``.
    """
    import time

    from scipy.optimize import minimize

    t0 = time.perf_counter()
    shape = (2, d.N, d.M - 1)
    th = np.zeros(shape) if theta0 is None else np.array(theta0, dtype=float).reshape(shape)
    if perturb:
        th = th + perturb * np.random.default_rng(seed).normal(size=shape)
    scale = d.dt * d.nu / d.h * 2.0 * d.nu  # gradient units -> log-tilt units
    history: list[float] = []
    counter = {"nfev": 0, "infeasible": 0}

    gradients: list[float] = []
    last = {"x": None, "J": None, "g": None}

    def fun(x):
        counter["nfev"] += 1
        with np.errstate(all="ignore"):
            rho, _, _, g, c = _sweep(x.reshape(shape), d, bd, barrier)
        J = c["objective"]
        if not (np.isfinite(J) and np.all(np.isfinite(g))) or rho.min() <= floor:
            # the midpoint walk can make densities negative (rates beyond its Markov
            # bound); where R < 0 the kinetic term lets J_h fall without bound. Networks
            # with some rho_c <= -eta/K are infeasible (then R > 0 and J_h is bounded
            # below); a large value makes the line search step back
            counter["infeasible"] += 1
            J = infeasible
            g = np.where(np.isfinite(g), g, 0.0)
        last["x"], last["J"], last["g"] = x.copy(), J, g
        return J, g.ravel()

    def projected(x, g):  # the gradient that L-BFGS-B's gtol measures (box projected)
        return np.abs(np.clip(x - g.ravel(), -bound, bound) - x).max() / scale

    def cb(x):  # scipy < 1.11 passes only x; the accepted point is the last evaluated one
        if last["x"] is None or not np.array_equal(x, last["x"]):
            fun(x)
        history.append(float(last["J"]))
        gradients.append(float(projected(x, last["g"])))
        if callback is not None:
            callback(x.reshape(shape), history[-1])

    with np.errstate(all="ignore"):
        _, _, _, g0, c0 = _sweep(th, d, bd, barrier)
    J0 = c0["objective"]
    infeasible = 1e3 * (1.0 + abs(J0))
    floor = 0.0 if barrier > 0 or d.eta == 0 else -d.eta / d.K
    history.append(J0)
    gradients.append(float(projected(th.ravel(), g0)))
    x, nit, restarts_used = th.ravel(), 0, 0
    while True:  # restart (fresh memory) when the line search fails, e.g. at the positivity edge
        r = minimize(fun, x, jac=True, method="L-BFGS-B", callback=cb,
                     bounds=[(-bound, bound)] * th.size,
                     options={"maxiter": maxiter - nit, "maxcor": maxcor, "gtol": gtol * scale,
                              "ftol": ftol, "maxfun": 4 * maxiter, "maxls": 50})
        gained = fun(x)[0] - r.fun if r.fun < infeasible else 0.0
        x, nit = r.x, nit + r.nit
        if r.success or nit >= maxiter or restarts_used >= restarts or \
                gained <= 1e-13 * (1.0 + abs(r.fun)):
            break
        restarts_used += 1
    theta = x.reshape(shape)
    J, g = cost_and_gradient(theta, d, bd)
    rho = forward_walk(bd.rho0, theta[0], theta[1], d)
    return {"theta": theta, "rho": rho, "cost": training_cost(rho, theta[0], theta[1], d, bd),
            "history": np.array(history), "gradients": np.array(gradients), "iterations": nit,
            "restarts": restarts_used, "evaluations": counter["nfev"],
            "infeasible_evaluations": counter["infeasible"],
            "message": str(r.message), "success": bool(r.success),
            "gradient_max": float(np.abs(g).max() / scale), "time": time.perf_counter() - t0}


def optimisation_guess(cfg, loss_scale: float = 1.0, *, gtol: float = 1e-6,
                       maxiter: int = 3000, info: dict | None = None, **kw) -> np.ndarray:
    """Initial guess ``Z[n, i, a]`` (all levels, natural layout) for Newton on the scheme
    of ``cfg`` with ``phi^N = -loss_scale G``: L-BFGS on ``J_h`` from the zero network
    (:func:`minimise`, extra keywords passed on), then :func:`kkt_state`.

    Serial numpy; every rank may call it (it is deterministic) or rank 0 may call it and
    the driver scatter ``Z`` (``MeshSolver.mesh.set_owned(X, Z)`` takes the global
    array). ``info``, when given, receives the :func:`minimise` result (without arrays).
    On the two-class case (M=129, N=32, nu=0.02, gamma=5) the defaults take about 60 s
    and Newton then converges in 2 iterations; 400 L-BFGS iterations (16 s) already gave
    a seed that converged in 5.
    """
    from .problem import boundary_data, discretisation

    d, bd = discretisation(cfg), boundary_data(cfg, loss_scale)
    r = minimise(d, bd, gtol=gtol, maxiter=maxiter, **kw)
    if info is not None:
        info.update({k: v for k, v in r.items() if not isinstance(v, np.ndarray)})
    return kkt_state(r["theta"], d, bd)


def serial_newton(Z: np.ndarray, d: Discretisation, bd: BoundaryData, *, rtol: float = 1e-10,
                  atol: float = 1e-13, max_it: int = 50, positivity: float = 0.9,
                  verbose: bool = False) -> dict:
    """Serial Newton on the scheme (``serial_residual``/``serial_jacobian``, SuperLU):
    ``Z <- Z - a J^{-1} F`` with ``a <= 1`` capped at ``positivity`` of the distance of
    every density to zero (METHOD.md 7). Converged when ``|F| <= max(rtol |F_0|, atol)``
    (2-norm). Returns ``Z``, ``converged``, ``iterations``, ``history`` (``|F|``), ``time``.
    """
    import time

    from scipy.sparse.linalg import splu

    from .scheme import serial_jacobian, serial_residual

    t0 = time.perf_counter()
    K = d.K
    Z = np.array(Z, dtype=float)
    F = serial_residual(Z, d, bd)
    hist = [float(np.linalg.norm(F))]
    tol = max(rtol * hist[0], atol)
    it, ok = 0, hist[0] <= tol
    while not ok and it < max_it:
        J = serial_jacobian(Z, d, bd).tocsc()
        dz = splu(J).solve(F.ravel()).reshape(Z.shape)
        a = 1.0
        if not d.unit_fraction:
            grow = dz[..., :K] > 0
            if grow.any():
                a = min(1.0, float((positivity * Z[..., :K][grow] / dz[..., :K][grow]).min()))
        Z -= a * dz
        F = serial_residual(Z, d, bd)
        it += 1
        hist.append(float(np.linalg.norm(F)))
        if verbose:
            print(f"  newton {it:2d} |F| {hist[-1]:.3e} step {a:.3f} {time.perf_counter() - t0:.1f}s",
                  flush=True)
        ok = hist[-1] <= tol
        if not np.isfinite(hist[-1]):
            break
    return {"Z": Z, "converged": bool(ok), "iterations": it, "history": hist,
            "time": time.perf_counter() - t0}
