"""From a configuration to the discrete problem: data tables and their projection, class
densities on the grid, the losses, and :func:`~mfc_hpc.problem.build.build_problem`."""
