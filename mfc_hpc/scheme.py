"""Pure numerical kernels of the multisymplectic random-walk scheme (METHOD.md section 4).

Everything here acts on plain numpy arrays and knows nothing of MPI or PETSc, so each
kernel can be tested alone. Array conventions:

* a *slab* of the depth-time mesh is ``Z[l, i, a]``: level ``l`` (depth), node ``i``
  (state), field ``a`` with ``a = c`` for ``rho_c`` and ``a = K + c`` for ``phi_c``;
* per-level kernels take ``rho[l, c, i]`` and ``phi[l, c, i]``;
* a slab covers contiguous global nodes; its first and last nodes are treated as
  reflecting ends, which is exact at the physical ends and only spoils the values on
  the ghost nodes of a distributed slab (never used).

Names follow METHOD.md: ``R_i = rho_i + eta``, ``P_ij = A_ij / R_i``,
``E_ij = exp(P_ij / (2 nu))``, ``dH_h/dphi`` (inflow - outflow) and ``dH_h/drho``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RunningCost",
    "Discretisation",
    "node_weights",
    "edge_terms",
    "vector_field",
    "vector_field_jacobian",
    "hamiltonian",
    "hamiltonian_density",
    "kinetic_cost",
    "kinetic_density",
    "running_cost",
    "drift",
    "outflow_rate",
    "slab_residual",
    "slab_jacobian",
    "SCHEMES",
]

#: Depth-time schemes: ``(theta_rho, theta_phi)``; density rows take ``dH/dphi`` at
#: ``(1-theta_rho) z^n + theta_rho z^{n+1}``, adjoint rows ``dH/drho`` at
#: ``(1-theta_phi) z^n + theta_phi z^{n+1}``.
SCHEMES: dict[str, tuple[float, float]] = {
    "midpoint": (0.5, 0.5),  # symplectic (default)
    "euler": (1.0, 0.0),  # implicit Euler in each equation's own direction (not symplectic)
}


@dataclass(frozen=True)
class RunningCost:
    """Mean-field running cost ``F(rho)`` of the total density ``rho = sum_c rho_c``.

    ``kind = "none"``: ``F = 0``; ``kind = "congestion"``: ``F = kappa/2 rho^2``.
    """

    kind: str = "none"
    kappa: float = 0.0

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.kappa != 0.0

    def F(self, r: np.ndarray) -> np.ndarray:
        return 0.5 * self.kappa * r * r if self.active else np.zeros_like(r)

    def dF(self, r: np.ndarray) -> np.ndarray:
        return self.kappa * r if self.active else np.zeros_like(r)

    def d2F(self, r: np.ndarray) -> np.ndarray:
        return np.full_like(r, self.kappa) if self.active else np.zeros_like(r)


@dataclass(frozen=True)
class Discretisation:
    """Mesh sizes and model constants of one discrete optimality system.

    ``M`` nodes ``x_i = x_min + i h`` and ``N`` layers ``t_n = n dt``; ``K`` classes;
    ``nu`` noise, ``eta`` weight decay, ``running`` the cost ``F``.
    """

    K: int
    M: int
    N: int
    x_min: float
    x_max: float
    T: float
    nu: float
    eta: float
    running: RunningCost = RunningCost()
    scheme: str = "midpoint"

    @property
    def h(self) -> float:
        return (self.x_max - self.x_min) / (self.M - 1)

    @property
    def dt(self) -> float:
        return self.T / self.N

    @property
    def x(self) -> np.ndarray:
        return self.x_min + self.h * np.arange(self.M)

    @property
    def t(self) -> np.ndarray:
        return self.dt * np.arange(self.N + 1)

    @property
    def thetas(self) -> tuple[float, float]:
        return SCHEMES[self.scheme]

    @property
    def unit_fraction(self) -> bool:
        """One class and ``eta = 0``: ``rho_c / R = 1`` exactly (never divide)."""
        return self.K == 1 and self.eta == 0.0


def node_weights(h: float, M: int, first: int = 0, count: int | None = None) -> np.ndarray:
    """Nodal weights ``w_i`` (``h`` inside, ``h/2`` at the ends) of global nodes ``first..``."""
    count = M - first if count is None else count
    gi = np.arange(first, first + count)
    w = np.full(count, h)
    w[(gi == 0) | (gi == M - 1)] = 0.5 * h
    return w


def _fractions(rho: np.ndarray, d: Discretisation) -> tuple[np.ndarray, np.ndarray]:
    """``f_{c,i} = rho_{c,i} / R_i`` and ``R_i = rho_i + eta`` for ``rho[l, c, i]``."""
    R = rho.sum(axis=1) + d.eta
    if d.unit_fraction:
        return np.ones_like(rho), R
    return rho / R[:, None, :], R


@dataclass
class EdgeTerms:
    """Quantities on the directed edges of each layer.

    Index ``p`` of an edge array is the node pair ``(p, p+1)``; suffix ``r`` is the jump
    ``p -> p+1`` (source ``s = p``), suffix ``l`` the jump ``p+1 -> p`` (source ``s = p+1``).
    ``D[l, c, p]`` is ``phi_{c,t} - phi_{c,s}``, ``P = A/R`` and ``E = exp(P/(2 nu))``.
    """

    f: np.ndarray
    R: np.ndarray
    Dr: np.ndarray
    Pr: np.ndarray
    Pl: np.ndarray
    Er: np.ndarray
    El: np.ndarray


def edge_terms(rho: np.ndarray, phi: np.ndarray, d: Discretisation) -> EdgeTerms:
    """Tilts ``E_ij`` of every directed edge, computed without cancellation (METHOD.md 7)."""
    f, R = _fractions(rho, d)
    Dr = phi[..., 1:] - phi[..., :-1]
    if d.unit_fraction:
        Pr = Dr[:, 0, :].copy()
        Pl = -Pr
    else:
        Pr = np.einsum("lcp,lcp->lp", f[..., :-1], Dr)
        Pl = -np.einsum("lcp,lcp->lp", f[..., 1:], Dr)
    two_nu = 2.0 * d.nu
    return EdgeTerms(f, R, Dr, Pr, Pl, np.exp(Pr / two_nu), np.exp(Pl / two_nu))


def vector_field(rho: np.ndarray, phi: np.ndarray, w: np.ndarray, d: Discretisation
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(dH_h/dphi, dH_h/drho)`` per level, each ``[l, c, i]`` (METHOD.md section 4)."""
    e = edge_terms(rho, phi, d)
    k = d.nu / d.h
    # net mass flow of class c across edge (p, p+1): (nu/h)(rho_p E_r - rho_{p+1} E_l)
    flow = k * (rho[..., :-1] * e.Er[:, None, :] - rho[..., 1:] * e.El[:, None, :])
    g_phi = np.zeros_like(rho)
    g_phi[..., :-1] -= flow
    g_phi[..., 1:] += flow
    two_nu = 2.0 * d.nu
    if d.unit_fraction:  # D_c - P = 0 exactly
        Tr = np.expm1(e.Pr / two_nu)[:, None, :]
        Tl = np.expm1(e.Pl / two_nu)[:, None, :]
    else:
        Tr = np.expm1(e.Pr / two_nu)[:, None, :] + e.Er[:, None, :] * (e.Dr - e.Pr[:, None, :]) / two_nu
        Tl = np.expm1(e.Pl / two_nu)[:, None, :] + e.El[:, None, :] * (-e.Dr - e.Pl[:, None, :]) / two_nu
    g_rho = np.zeros_like(rho)
    g_rho[..., :-1] += two_nu * k * Tr
    g_rho[..., 1:] += two_nu * k * Tl
    if d.running.active:
        g_rho -= (w * d.running.dF(rho.sum(axis=1)))[:, None, :]
    return g_phi, g_rho


def _edge_derivatives(rho_s, f_s, R_s, D, P, E, d: Discretisation):
    """Derivatives of one family of directed edges ``s -> t``.

    Returns ``(dO_s, dO_t, dS_s, dS_t)``, each ``[l, p, c, b]`` with ``b`` over the 2K
    columns ``(rho_d, phi_d)`` of the source ``s`` or target ``t`` node, where
    ``O_c = (nu/h) rho_{c,s} E`` is the outflow along the edge and
    ``S_c = 2 nu (nu/h) [(E - 1) + E (D_c - P)/(2 nu)]`` its term of ``dH/drho_{c,s}``.
    Arguments are ``rho_s, f_s, D: [l, c, p]``; ``R_s, P, E: [l, p]``.
    """
    K = d.K
    k = d.nu / d.h
    two_nu = 2.0 * d.nu
    L, P_ = P.shape
    rho_s = np.moveaxis(rho_s, 1, 2)  # [l, p, c]
    f_s = np.moveaxis(f_s, 1, 2)
    D = np.moveaxis(D, 1, 2)
    if d.unit_fraction:
        g = np.zeros_like(D)  # d(A/R)/d rho = (D - P)/R = 0
        Q = np.zeros_like(D)
    else:
        Q = D - P[..., None]  # [l, p, c]
        g = Q / R_s[..., None]  # d P / d rho_{d,s}
    eye = np.eye(K)
    kE = (k * E)[..., None, None]  # [l, p, 1, 1]
    dO_s = np.empty((L, P_, K, 2 * K))
    dO_t = np.zeros((L, P_, K, 2 * K))
    dS_s = np.empty((L, P_, K, 2 * K))
    dS_t = np.zeros((L, P_, K, 2 * K))
    rg = rho_s[..., :, None] / two_nu  # [l, p, c, 1]
    dO_s[..., :K] = kE * (eye + rg * g[..., None, :])
    dO_s[..., K:] = -kE * rg * f_s[..., None, :]
    dO_t[..., K:] = kE * rg * f_s[..., None, :]
    qf = Q[..., :, None] * f_s[..., None, :] / two_nu  # [l, p, c, d]
    dS_s[..., :K] = kE * Q[..., :, None] * g[..., None, :] / two_nu
    dS_s[..., K:] = -kE * (qf + eye)
    dS_t[..., K:] = kE * (qf + eye)
    return dO_s, dO_t, dS_s, dS_t


def vector_field_jacobian(rho: np.ndarray, phi: np.ndarray, w: np.ndarray, d: Discretisation
                          ) -> np.ndarray:
    """Jacobian of ``(dH/dphi, dH/drho)`` per level: ``J[l, i, o, a, b]``.

    Row ``a`` (``c``: ``dH/dphi_c``, ``K + c``: ``dH/drho_c``) at node ``i``, column ``b``
    (``d``: ``rho_d``, ``K + d``: ``phi_d``) at node ``i + o - 1``.
    """
    K = d.K
    L, _, m = rho.shape
    e = edge_terms(rho, phi, d)
    J = np.zeros((L, m, 3, 2 * K, 2 * K))
    # jumps p -> p+1
    Os, Ot, Ss, St = _edge_derivatives(rho[..., :-1], e.f[..., :-1], e.R[..., :-1], e.Dr,
                                       e.Pr, e.Er, d)
    J[:, :-1, 1, :K] -= Os
    J[:, :-1, 2, :K] -= Ot
    J[:, 1:, 0, :K] += Os
    J[:, 1:, 1, :K] += Ot
    J[:, :-1, 1, K:] += Ss
    J[:, :-1, 2, K:] += St
    # jumps p+1 -> p
    Os, Ot, Ss, St = _edge_derivatives(rho[..., 1:], e.f[..., 1:], e.R[..., 1:], -e.Dr,
                                       e.Pl, e.El, d)
    J[:, 1:, 1, :K] -= Os
    J[:, 1:, 0, :K] -= Ot
    J[:, :-1, 2, :K] += Os
    J[:, :-1, 1, :K] += Ot
    J[:, 1:, 1, K:] += Ss
    J[:, 1:, 0, K:] += St
    if d.running.active:
        J[:, :, 1, K:, :K] -= (w * d.running.d2F(rho.sum(axis=1)))[:, :, None, None]
    return J


def hamiltonian_density(rho: np.ndarray, phi: np.ndarray, w: np.ndarray, d: Discretisation
                        ) -> np.ndarray:
    """Node contributions ``[l, i]`` to ``H_h``: ``sum_j 2 nu (nu/h) R_i (E_ij - 1) - w_i F(rho_i)``.

    Each directed edge is counted at its source, so owned nodes of a distributed slab
    sum to the rank's share of ``H_h`` without double counting.
    """
    e = edge_terms(rho, phi, d)
    two_nu = 2.0 * d.nu
    k = d.nu / d.h
    H = np.zeros(e.R.shape)
    H[:, :-1] += e.R[:, :-1] * np.expm1(e.Pr / two_nu)
    H[:, 1:] += e.R[:, 1:] * np.expm1(e.Pl / two_nu)
    H *= two_nu * k
    if d.running.active:
        H -= w * d.running.F(rho.sum(axis=1))
    return H


def hamiltonian(rho: np.ndarray, phi: np.ndarray, w: np.ndarray, d: Discretisation) -> np.ndarray:
    """Discrete Hamiltonian ``H_h(z)`` of each level (summed over the slab's nodes)."""
    return hamiltonian_density(rho, phi, w, d).sum(axis=1)


def _relative_entropy(P: np.ndarray, two_nu: float) -> np.ndarray:
    """``c(E) = E log E - E + 1`` with ``E = exp(P/(2 nu))``, accurate for small ``P``."""
    y = P / two_nu
    return np.exp(y) * y - np.expm1(y)


def kinetic_density(rho: np.ndarray, phi: np.ndarray, d: Discretisation) -> np.ndarray:
    """Node contributions ``[l, i]`` to the kinetic cost rate ``sum_j 2 nu (nu/h) R_i c(E_ij)``."""
    e = edge_terms(rho, phi, d)
    two_nu = 2.0 * d.nu
    k = d.nu / d.h
    C = np.zeros(e.R.shape)
    C[:, :-1] += e.R[:, :-1] * _relative_entropy(e.Pr, two_nu)
    C[:, 1:] += e.R[:, 1:] * _relative_entropy(e.Pl, two_nu)
    return two_nu * k * C


def kinetic_cost(rho: np.ndarray, phi: np.ndarray, d: Discretisation) -> np.ndarray:
    """Per level ``sum_{i,j} 2 nu (nu/h) R_i c(E_ij)``: the kinetic (layer-weight) cost rate."""
    return kinetic_density(rho, phi, d).sum(axis=1)


def running_cost(rho: np.ndarray, w: np.ndarray, d: Discretisation) -> np.ndarray:
    """Per level ``sum_i w_i F(rho_i)``."""
    return (w * d.running.F(rho.sum(axis=1))).sum(axis=1)


def drift(rho: np.ndarray, phi: np.ndarray, d: Discretisation) -> np.ndarray:
    """Layer drift ``b_i = (nu/h)(E_{i,i+1} - E_{i,i-1})`` per level, ``[l, i]``.

    At the walls the one-sided ``b_0 = 2 (nu/h)(E_{0,1} - 1)`` and
    ``b_{M-1} = 2 (nu/h)(1 - E_{M-1,M-2})`` (zero without control, like inside).
    """
    e = edge_terms(rho, phi, d)
    k = d.nu / d.h
    b = np.empty(e.R.shape)
    b[:, 1:-1] = k * (e.Er[:, 1:] - e.El[:, :-1])
    b[:, 0] = 2.0 * k * (e.Er[:, 0] - 1.0)
    b[:, -1] = 2.0 * k * (1.0 - e.El[:, -1])
    return b


def outflow_rate(rho: np.ndarray, phi: np.ndarray, w: np.ndarray, d: Discretisation) -> np.ndarray:
    """Outflow rate ``(nu/(h w_i)) sum_j E_ij`` of every node, ``[l, i]`` (METHOD.md 6)."""
    e = edge_terms(rho, phi, d)
    out = np.zeros(e.R.shape)
    out[:, :-1] += e.Er
    out[:, 1:] += e.El
    return d.nu / d.h * out / w


# ----------------------------------------------------------------------------------
# The discrete system on a (ghosted) slab of the depth-time mesh
# ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slab:
    """Where a ghosted slab and its owned box sit in the global mesh.

    The ghosted array covers levels ``l0 .. l0+Lg-1`` and nodes ``i0 .. i0+mg-1``; the
    owned box is levels ``ys .. ye-1`` and nodes ``xs .. xe-1`` (global indices).
    """

    l0: int
    i0: int
    ys: int
    ye: int
    xs: int
    xe: int

    def owned(self, Zg: np.ndarray) -> np.ndarray:
        return Zg[self.ys - self.l0:self.ye - self.l0, self.xs - self.i0:self.xe - self.i0]


def _layers(Zg: np.ndarray, theta: float) -> np.ndarray:
    """Evaluation points ``(1-theta) z^l + theta z^{l+1}`` between consecutive slab levels."""
    if theta == 0.5:
        return 0.5 * (Zg[:-1] + Zg[1:])
    return (1.0 - theta) * Zg[:-1] + theta * Zg[1:]


def _split(Z: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """``Z[l, i, a]`` -> ``rho[l, c, i], phi[l, c, i]``."""
    return np.moveaxis(Z[..., :K], 2, 1), np.moveaxis(Z[..., K:], 2, 1)


class BoundaryData:
    """Initial densities and terminal condition ``phi^N = Phi(rho^N)``.

    The default terminal condition is a fixed loss, ``Phi_c = -G_c(x)``; a mean-field
    terminal cost supplies ``Phi`` depending on ``rho^N`` and its derivative.
    """

    def __init__(self, rho0: np.ndarray, G: np.ndarray, scale: float = 1.0) -> None:
        self.rho0 = np.asarray(rho0, dtype=float)  # [c, i] on all M nodes
        self.G = np.asarray(G, dtype=float)  # [c, i]
        self.scale = float(scale)  # loss weight of the continuation, phi^N = -scale G

    def terminal(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        """``Phi_c(rho^N)`` on global nodes ``i0..i1-1``; ``rhoN[c, i]``."""
        return -self.scale * self.G[:, i0:i1]

    def terminal_scale_derivative(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        """``dPhi_c/d scale`` on global nodes ``i0..i1-1`` (for the tangent predictor)."""
        return -self.G[:, i0:i1]

    def terminal_cost(self, rhoN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> float:
        """The slab's share of ``sum_c sum_i w_i scale G_c(x_i) rho^N_{c,i}``."""
        return float((w * self.scale * self.G[:, i0:i1] * rhoN).sum())

    def terminal_derivative(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray | None:
        """``dPhi_c/drho_d`` as ``[i, c, d]``, or ``None`` when ``Phi`` is fixed."""
        return None

    def terminal_rows(self, ZN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> np.ndarray | None:
        """Terminal equations other than ``w_i (phi^N - Phi(rho^N))`` (e.g. the Schroedinger
        bridge, :mod:`mfc_hpc.transport`): the rows ``[i, c]`` of the adjoint slots at level
        ``N`` on global nodes ``i0..i1-1`` from ``ZN[i, a]`` (level ``N``, all ``2K``
        fields), or ``None`` for the default. They may only use level ``N`` at their own
        node (the box stencil)."""
        return None

    def terminal_rows_jacobian(self, ZN: np.ndarray, w: np.ndarray, i0: int, i1: int
                               ) -> np.ndarray | None:
        """Derivative ``[i, c, b]`` of :meth:`terminal_rows` with respect to field ``b`` of
        level ``N`` at the same node (``None`` with the default rows). The uncontrolled
        matrix (``slab_jacobian(..., uncontrolled=True)``) always uses the default rows
        ``w_i phi^N``."""
        return None


def slab_residual(Zg: np.ndarray, s: Slab, d: Discretisation, bd: BoundaryData) -> np.ndarray:
    """Residual of the discrete optimality system on the owned box, ``[n, i, a]``.

    Density slot of point ``(i, n)``: ``w_i (rho^n - rho^{n-1}) - dt dH/dphi`` at the
    layer ``n-1 -> n`` (``w_i (rho^0 - rho_init)`` at ``n = 0``). Adjoint slot:
    ``w_i (phi^{n+1} - phi^n) + dt dH/drho`` at the layer ``n -> n+1``
    (``w_i (phi^N - Phi(rho^N))`` at ``n = N``).
    """
    K = d.K
    th_r, th_p = d.thetas
    mg = Zg.shape[1]
    wg = node_weights(d.h, d.M, s.i0, mg)
    own_x = slice(s.xs - s.i0, s.xe - s.i0)
    w = wg[own_x]
    rho_r, phi_r = _split(_layers(Zg, th_r), K)
    g_phi, _ = vector_field(rho_r, phi_r, wg, d)
    if th_p == th_r:
        _, g_rho = vector_field(rho_r, phi_r, wg, d)
    else:
        rho_p, phi_p = _split(_layers(Zg, th_p), K)
        _, g_rho = vector_field(rho_p, phi_p, wg, d)
    F = np.empty((s.ye - s.ys, s.xe - s.xs, 2 * K))
    Zo = s.owned(Zg)
    lev = np.arange(s.ys, s.ye)
    # density rows: layer index (n-1) - l0 for n >= 1
    m = lev >= 1
    if m.any():
        n1 = lev[m]
        dz = Zg[n1 - s.l0, own_x, :K] - Zg[n1 - 1 - s.l0, own_x, :K]
        F[m, :, :K] = w[:, None] * dz - d.dt * np.moveaxis(g_phi[n1 - 1 - s.l0][..., own_x], 1, 2)
    if (~m).any():
        F[~m, :, :K] = w[:, None] * (Zo[~m, :, :K] - bd.rho0[:, s.xs:s.xe].T)
    # adjoint rows: layer index n - l0 for n <= N-1
    m = lev <= d.N - 1
    if m.any():
        n0 = lev[m]
        dz = Zg[n0 + 1 - s.l0, own_x, K:] - Zg[n0 - s.l0, own_x, K:]
        F[m, :, K:] = w[:, None] * dz + d.dt * np.moveaxis(g_rho[n0 - s.l0][..., own_x], 1, 2)
    if (~m).any():
        ZN = Zo[~m][0]  # level N, [i, a]
        rows = bd.terminal_rows(ZN, w, s.xs, s.xe)
        if rows is not None:
            F[~m, :, K:] = rows
        else:
            target = bd.terminal(ZN[:, :K].T, s.xs, s.xe)
            F[~m, :, K:] = w[:, None] * (ZN[:, K:] - target.T)
    return F


def slab_jacobian(Zg: np.ndarray, s: Slab, d: Discretisation, bd: BoundaryData,
                  uncontrolled: bool = False) -> np.ndarray:
    """Jacobian rows of the owned box: ``V[n, i, a, q, o, b]``.

    Row ``a`` of point ``(i, n)``; column field ``b`` at node ``i + o - 1`` and level
    ``n + q - 1`` for density rows, ``n + q`` for adjoint rows (``q = 0, 1``).
    Entries whose column lies outside the mesh are zero.

    With ``uncontrolled=True`` it is instead the matrix of the *uncontrolled flow*
    (``E = 1``: the density diffused forward by the plain walk, the adjoint diffused
    backward by the discrete heat operator, ``F = 0``): the Jacobian at ``z = 0``
    without running cost. The system is then linear and ``-J^{-1} F(0)`` is the
    initial guess of METHOD.md section 7.
    """
    if uncontrolled:
        Zg = np.zeros_like(Zg)
        d = dataclasses.replace(d, running=RunningCost())
    K = d.K
    th_r, th_p = d.thetas
    mg = Zg.shape[1]
    wg = node_weights(d.h, d.M, s.i0, mg)
    own_x = slice(s.xs - s.i0, s.xe - s.i0)
    w = wg[own_x]
    Lo, mo = s.ye - s.ys, s.xe - s.xs
    V = np.zeros((Lo, mo, 2 * K, 2, 3, 2 * K))
    lev = np.arange(s.ys, s.ye)
    eye = np.eye(K)
    wI = w[:, None, None] * eye  # [i, c, d]

    rho_r, phi_r = _split(_layers(Zg, th_r), K)
    Jr = vector_field_jacobian(rho_r, phi_r, wg, d)
    if th_p == th_r:
        Jp = Jr
    else:
        rho_p, phi_p = _split(_layers(Zg, th_p), K)
        Jp = vector_field_jacobian(rho_p, phi_p, wg, d)

    m = lev >= 1
    if m.any():
        Jl = Jr[lev[m] - 1 - s.l0][:, own_x, :, :K, :]  # [n, i, o, c, b]
        Jl = np.moveaxis(Jl, 2, 3)  # [n, i, c, o, b]
        V[m, :, :K, 0] = -d.dt * (1.0 - th_r) * Jl
        V[m, :, :K, 1] = -d.dt * th_r * Jl
        V[m, :, :K, 0, 1, :K] -= wI
        V[m, :, :K, 1, 1, :K] += wI
    if (~m).any():
        V[~m, :, :K, 1, 1, :K] = wI
    m = lev <= d.N - 1
    if m.any():
        Jl = np.moveaxis(Jp[lev[m] - s.l0][:, own_x, :, K:, :], 2, 3)
        V[m, :, K:, 0] = d.dt * (1.0 - th_p) * Jl
        V[m, :, K:, 1] = d.dt * th_p * Jl
        V[m, :, K:, 0, 1, K:] -= wI
        V[m, :, K:, 1, 1, K:] += wI
    if (~m).any():
        V[~m, :, K:, 0, 1, K:] = wI
        Zo = s.owned(Zg)
        dRows = None if uncontrolled else bd.terminal_rows_jacobian(Zo[~m][0], w, s.xs, s.xe)
        if dRows is not None:
            V[~m, :, K:, 0, 1, :] = dRows
        else:
            dPhi = None if uncontrolled else bd.terminal_derivative(Zo[~m][0][:, :K].T, s.xs, s.xe)
            if dPhi is not None:
                V[~m, :, K:, 0, 1, :K] = -w[:, None, None] * dPhi
    return V


def stencil_columns(s: Slab, d: Discretisation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Global natural coordinates of every entry of :func:`slab_jacobian`.

    Returns ``(level, node, field, valid)`` arrays broadcastable to the shape of ``V``;
    ``valid`` is False where the column falls outside the mesh.
    """
    K = d.K
    n = np.arange(s.ys, s.ye)[:, None, None, None, None, None]
    i = np.arange(s.xs, s.xe)[None, :, None, None, None, None]
    a = np.arange(2 * K)[None, None, :, None, None, None]
    q = np.arange(2)[None, None, None, :, None, None]
    o = np.arange(3)[None, None, None, None, :, None]
    b = np.arange(2 * K)[None, None, None, None, None, :]
    level = n + q - (a < K)
    node = i + o - 1
    valid = (level >= 0) & (level <= d.N) & (node >= 0) & (node < d.M)
    return level, node, b, valid


def natural_index(level: np.ndarray, node: np.ndarray, field: np.ndarray, d: Discretisation
                  ) -> np.ndarray:
    """Index of unknown ``(n, i, a)`` in the natural ordering ``((n M) + i) 2K + a``."""
    return (level * d.M + node) * (2 * d.K) + field


def serial_jacobian(Z: np.ndarray, d: Discretisation, bd: BoundaryData):
    """The whole Jacobian as a scipy CSR matrix in natural ordering (serial reference)."""
    import scipy.sparse as sp

    s = Slab(0, 0, 0, d.N + 1, 0, d.M)
    V = slab_jacobian(Z, s, d, bd)
    level, node, field, valid = stencil_columns(s, d)
    shape = V.shape
    rows = natural_index(np.arange(d.N + 1)[:, None, None], np.arange(d.M)[None, :, None],
                         np.arange(2 * d.K)[None, None, :], d)
    rows = np.broadcast_to(rows[..., None, None, None], shape)
    cols = np.broadcast_to(natural_index(level, node, field, d), shape)
    valid = np.broadcast_to(valid, shape)
    n = (d.N + 1) * d.M * 2 * d.K
    return sp.csr_matrix((V[valid], (rows[valid], cols[valid])), shape=(n, n))


def serial_residual(Z: np.ndarray, d: Discretisation, bd: BoundaryData) -> np.ndarray:
    """The whole residual ``[n, i, a]`` (serial reference)."""
    return slab_residual(Z, Slab(0, 0, 0, d.N + 1, 0, d.M), d, bd)
