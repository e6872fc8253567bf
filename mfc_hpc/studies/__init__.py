"""Studies on top of the solver: the preserved structure (:mod:`.structure`) and the
stability rules of layers against nodes (:mod:`.stability`, :mod:`.sweep`)."""
