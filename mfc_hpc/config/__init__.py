"""One validated run configuration, loaded from TOML.

Every section is a frozen dataclass (:mod:`.sections`) with its defaults written once;
:func:`load_config` rejects unknown keys, wrong types, wrong lengths and impossible values
with a :class:`~mfc_hpc.errors.ConfigError` whose one-line message names the key
(``mesh.nodes: must be an integer >= 3, got -4``). Loading does no data I/O.
"""
from ..errors import ConfigError
from .load import Config, config_from_dict, load_config
from .sections import (CheckpointConfig, ClassConfig, DataConfig, LossConfig, MeshConfig, ModelConfig,
                       SolverConfig)

__all__ = ["ConfigError", "Config", "MeshConfig", "ModelConfig", "ClassConfig", "LossConfig",
           "SolverConfig", "CheckpointConfig", "DataConfig", "load_config", "config_from_dict"]
