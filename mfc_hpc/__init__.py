"""mfc_hpc: deep residual networks as mean-field type control, solved in parallel by a
multisymplectic scheme on the depth-time mesh (see METHOD.md)."""
__version__ = "0.1.0"
