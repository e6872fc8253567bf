"""Sub-commands of ``mfc-hpc``: each module registers one parser (see :mod:`mfc_hpc.cli.main`)
and turns arguments into library calls and printed results."""
