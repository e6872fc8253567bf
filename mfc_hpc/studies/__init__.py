"""Studies on top of the solver: the preserved structure (:mod:`.structure`), the
stability rules of layers against nodes (:mod:`.stability`, :mod:`.sweep`) and the
performance harness (:mod:`.perf`)."""
