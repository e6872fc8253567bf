"""Configurations shared by the tests, and an in-process solve."""
from __future__ import annotations

import numpy as np

from mfc_hpc.config import config_from_dict

NU, ALPHA, TARGET, MU0, S0, T = 0.1, 1.0, 0.5, -0.5, 0.25, 1.0


def closed_form_config(M, N, **solver):
    """METHOD.md section 5 on [-3, 3]; ``M`` an int (1-D) or a pair (2-D, product data)."""
    two = isinstance(M, (tuple, list))
    mesh = {"x_min": -3.0, "x_max": 3.0, "nodes": list(M) if two else M, "layers": N, "depth": T}
    cls = {"prior": 1.0, "mean": [MU0, 0.3] if two else MU0, "var": [S0, 0.3] if two else S0}
    loss = {"kind": "quadratic", "alpha": ALPHA, "target": [TARGET, -0.2] if two else TARGET}
    return config_from_dict({"mesh": mesh, "model": {"nu": NU, "eta": 0.0}, "classes": [cls], "loss": loss,
                             "solver": solver})


def two_class_config(M=65, N=16, gamma=1.0, nu=0.1, kappa=0.0, **solver):
    """Two overlapping Gaussian classes, soft-max head; ``M`` an int (1-D) or a pair (2-D:
    classes apart along both axes, logits not aligned with an axis)."""
    model = {"nu": nu, "eta": 0.1}
    if kappa:
        model.update(running="congestion", kappa=kappa)
    two = isinstance(M, (tuple, list))
    classes = ([{"prior": 0.5, "mean": [-0.5, 0.2], "var": [0.09, 0.16]},
                {"prior": 0.5, "mean": [0.5, -0.1], "var": [[0.09, 0.02], [0.02, 0.12]]}] if two else
               [{"prior": 0.5, "mean": -0.5, "var": 0.09}, {"prior": 0.5, "mean": 0.5, "var": 0.09}])
    weights = [[-1.0, 0.3], [1.0, -0.2]] if two else [-1.0, 1.0]
    return config_from_dict({
        "mesh": {"x_min": -4.0 if not two else [-3.0, -2.5], "x_max": 4.0 if not two else [3.0, 2.5],
                 "nodes": list(M) if two else M, "layers": N, "depth": 1.0},
        "model": model,
        "classes": classes,
        "loss": {"kind": "softmax", "weights": weights, "biases": [0.0, 0.0], "gamma": gamma},
        "solver": solver,
    })


def solve_case(cfg, **kw):
    """Solve in process: ``(ms, summary, Z)`` with the whole state ``Z[n, *i, a]`` on every rank."""
    from mfc_hpc.jobs.solve import solve

    res = solve(cfg, verbose=False, **kw)
    Z = res.ms.mesh.gather(res.ms.X, root=None)
    return res.ms, res.summary, Z


def whole_weights(grid) -> np.ndarray:
    return grid.weights()
