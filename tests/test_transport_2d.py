"""The transport terminal conditions with a two-dimensional state (they extend directly):
the KL terminal cost lowers KL(rho(T) | q) with exact mass, and the Schroedinger bridge ends
at its target."""
from __future__ import annotations

import numpy as np

from cases import solve_case
from mfc_hpc.config import config_from_dict
from mfc_hpc.numerics.terminal import kl_divergence

RAW = {"mesh": {"x_min": -3.0, "x_max": 3.0, "nodes": [13, 13], "layers": 6}, "model": {"nu": 0.1},
       "classes": [{"mean": [-1.0, 0.0], "var": 0.2}]}
TARGET = {"mean": [1.0, 0.5], "var": [0.3, 0.2]}


def test_kl_transport_in_2d_lowers_kl_with_exact_mass():
    ms, s, Z = solve_case(config_from_dict({**RAW, "loss": {"kind": "kl", "gamma": 5.0, "target": TARGET}}))
    assert s["converged"]
    w = ms.d.grid.weights()
    q = ms.bd.target[0]
    ms.destroy()
    assert s["diagnostics"]["mass_error_max"] < 1e-12
    kl0, klN = kl_divergence(Z[0, ..., 0], q, w), kl_divergence(Z[-1, ..., 0], q, w)
    assert klN < 0.2 * kl0


def test_bridge_in_2d_ends_at_its_target():
    ms, s, Z = solve_case(config_from_dict({**RAW, "loss": {"kind": "bridge", "target": TARGET}}))
    assert s["converged"]
    w = ms.d.grid.weights()
    q = ms.bd.target[0]
    ms.destroy()
    l1_end = float((w * np.abs(Z[-1, ..., 0] - q)).sum())
    l1_start = float((w * np.abs(Z[0, ..., 0] - q)).sum())
    assert l1_end < 1e-8 and l1_start > 1.0
