"""The learning layer: the trained network (export, NPZ/ONNX), baselines, evaluation,
transport report and pictures (see ``mfc_hpc/docs/deep_learning.md``)."""
