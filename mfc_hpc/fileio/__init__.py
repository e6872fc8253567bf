"""Files: the global layout of a state, one HDF5 writer and reader with one fallback
policy, checksums, ``solution.h5`` (format 2), checkpoints, restart (an observer of the
driver), the XDMF sidecar and ``summary.json``."""
