"""A run's settings: typed sections (`sections`), the composed `RunConfig` (`run_config`) and presets.

    from fedrec.shared.config import RunConfig
    cfg = RunConfig.from_mapping({"user_dp.enabled": True, "run.rounds": 40})
    cfg.user_dp.clip_norm, cfg.run.clients_sampled(1892)
"""

from fedrec.shared.config.hybrid import HybridConfig
from fedrec.shared.config.presets import load_preset, preset_names, preset_path
from fedrec.shared.config.run_config import DEPRECATED, FIELDS, SECTIONS, RunConfig, canonical_key, help_text, nest
from fedrec.shared.config.sections import (
    AuditConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RecordDpConfig,
    RunSection,
    SecAggConfig,
    TrainConfig,
    UserDpConfig,
)
from fedrec.shared.errors import ConfigError

__all__ = [
    "DEPRECATED",
    "FIELDS",
    "SECTIONS",
    "AuditConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "HybridConfig",
    "ModelConfig",
    "RecordDpConfig",
    "RunConfig",
    "RunSection",
    "SecAggConfig",
    "TrainConfig",
    "UserDpConfig",
    "canonical_key",
    "help_text",
    "load_preset",
    "nest",
    "preset_names",
    "preset_path",
]
