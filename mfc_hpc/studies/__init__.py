"""Studies built on the solver: optimality checks, structure, stability, and the
performance harness (:mod:`mfc_hpc.studies.perf`)."""
