"""Pure numerical kernels (numpy and scipy only), for any state dimension ``d``.

The state dimension is known to :class:`~mfc_hpc.numerics.grid.StateGrid` alone: the
kernels loop over its axes, and the depth assembly and the Jacobian pattern come from one
stencil-offset table (:data:`mfc_hpc.numerics.depth.stencil_offsets`). Nothing here
imports PETSc, MPI or h5py (a test reads the import graph).
"""
