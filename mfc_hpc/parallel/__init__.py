"""PETSc and MPI plumbing, no formulas: the (d+1)-D DMDA and its views, the Jacobian
pattern and preallocation, reductions, options owned per solver, log events, the
linear-solver presets and the SNES wiring."""
