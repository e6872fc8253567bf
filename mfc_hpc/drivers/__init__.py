"""The solve strategy: run state, continuation, grid sequencing, the optimisation route,
diagnostics, and the run loop that notifies observers (checkpointing) of its transitions."""
