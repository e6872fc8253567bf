"""Sub-commands of ``mfc-hpc``: each module registers one parser (see :mod:`mfc_hpc.cli`)."""


def solve_gathered(cfg, out_dir):
    """Solve ``cfg`` (collective, writing ``out_dir``), gather the solution ``Z[n, i, a]`` on
    every rank and free the solver: returns ``(Z, summary, rank)`` for serial post-processing."""
    from ..run import solve_config

    ms, summary = solve_config(cfg, out_dir=out_dir)
    Z = ms.state()
    rank = ms.mesh.comm.getRank()
    ms.destroy()
    return Z, summary, rank
