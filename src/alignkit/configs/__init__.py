"""Every command's config, in one package (``from alignkit.configs import DPOConfig, load_config``).

- :mod:`~alignkit.configs.base`: :class:`TrainConfig`, the fields every training command shares
  (data, run directory, optimisation, logging, lengths, precision, LoRA), and the symptom thresholds;
- :mod:`~alignkit.configs.methods`: DPO (and its family), SFT, reward model, KTO, ORPO;
- :mod:`~alignkit.configs.rl`: PPO, GRPO, RLOO and their reward specs;
- :mod:`~alignkit.configs.data`: building data (`pairs`, `annotate`, `label`) and serving (`serve`), endpoints;
- :mod:`~alignkit.configs.evaluation`: `eval`, `sweep`, `report`, `score`;
- :mod:`~alignkit.configs.demo`: `demo`;
- :mod:`~alignkit.configs.loading`: YAML file + ``--key value`` overrides -> a validated config.

Field names follow TRL's where the concept is the same (``beta``, ``learning_rate``,
``per_device_train_batch_size`` ...); every field is documented in place and ``alignkit <command>
--help`` prints these descriptions.
"""

from alignkit.configs.base import (
    EMBEDDED_MODEL,
    SCHEDULERS,
    SymptomThresholds,
    TrainConfig,
)
from alignkit.configs.data import (
    AnnotateConfig,
    EndpointJobConfig,
    EndpointSettings,
    JudgeFields,
    LabelConfig,
    PairsConfig,
    ScorerFields,
    ServeConfig,
)
from alignkit.configs.demo import DemoConfig
from alignkit.configs.evaluation import (
    PROBES,
    EnvConfig,
    EvalConfig,
    EvalFields,
    ReportConfig,
    ScoreConfig,
    SweepConfig,
)
from alignkit.configs.loading import (
    describe_fields,
    load_config,
    parse_overrides,
    save_config,
)
from alignkit.configs.methods import (
    DPOConfig,
    KTOConfig,
    ORPOConfig,
    RewardConfig,
    SFTConfig,
)
from alignkit.configs.rl import (
    GroupConfig,
    GRPOConfig,
    PPOConfig,
    RewardSpec,
    RLConfig,
    RLOOConfig,
)

__all__ = [
    "EMBEDDED_MODEL",
    "SCHEDULERS",
    "AnnotateConfig",
    "DemoConfig",
    "DPOConfig",
    "EndpointJobConfig",
    "EndpointSettings",
    "EvalConfig",
    "EvalFields",
    "GRPOConfig",
    "GroupConfig",
    "JudgeFields",
    "KTOConfig",
    "LabelConfig",
    "ORPOConfig",
    "PPOConfig",
    "PROBES",
    "PairsConfig",
    "RLConfig",
    "RLOOConfig",
    "EnvConfig",
    "ReportConfig",
    "RewardConfig",
    "RewardSpec",
    "SFTConfig",
    "ScoreConfig",
    "ScorerFields",
    "ServeConfig",
    "SweepConfig",
    "SymptomThresholds",
    "TrainConfig",
    "describe_fields",
    "load_config",
    "parse_overrides",
    "save_config",
]
