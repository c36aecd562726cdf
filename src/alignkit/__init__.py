"""alignkit: align open language models with human preferences.

The Python API the CLI is a thin layer over::

    from alignkit import DPOConfig, train_dpo
    result = train_dpo(DPOConfig(train_data="pairs.jsonl", output_dir="runs/dpo"))

Submodules are imported lazily so ``import alignkit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DPOConfig": "alignkit.configs",
    "DemoConfig": "alignkit.configs",
    "TrainConfig": "alignkit.configs",
    "load_config": "alignkit.configs",
    "train_dpo": "alignkit.train.dpo",
    "SFTConfig": "alignkit.configs",
    "RewardConfig": "alignkit.configs",
    "ScoreConfig": "alignkit.configs",
    "KTOConfig": "alignkit.configs",
    "ORPOConfig": "alignkit.configs",
    "train_sft": "alignkit.train.sft",
    "train_reward": "alignkit.train.reward",
    "train_kto": "alignkit.train.kto",
    "train_orpo": "alignkit.train.orpo",
    "score_pairs": "alignkit.commands.score",
    "reward_text": "alignkit.data.tokenize",
    "preference_loss": "alignkit.losses.preference",
    "kto_loss": "alignkit.losses.kto",
    "orpo_loss": "alignkit.losses.orpo",
    "bradley_terry_loss": "alignkit.losses.reward",
    "sequence_scores": "alignkit.engine.scores",
    "run_demo": "alignkit.commands.demo.run",
    "load_preference_data": "alignkit.data.preference",
    "dpo_loss": "alignkit.losses.preference",
    "sequence_logps": "alignkit.engine.logprobs",
    "load_model_and_tokenizer": "alignkit.models.loading",
    "embedded_model_path": "alignkit.models.embedded",
    "PairsConfig": "alignkit.configs",
    "AnnotateConfig": "alignkit.configs",
    "ServeConfig": "alignkit.configs",
    "build_pairs": "alignkit.commands.pairs",
    "annotate": "alignkit.commands.annotate",
    "serve": "alignkit.commands.serve",
    "serving": "alignkit.commands.serve",
    "LLMJudge": "alignkit.judges.llm_judge",
    "ChatClient": "alignkit.judges.client",
    "EndpointSettings": "alignkit.configs",
    "run_tests": "alignkit.judges.sandbox",
    "doctor": "alignkit.diagnose.doctor",
    "run_checks": "alignkit.diagnose.doctor",
    "SymptomMonitor": "alignkit.diagnose.symptoms",
    "SymptomThresholds": "alignkit.configs",
    "EvalConfig": "alignkit.configs",
    "SweepConfig": "alignkit.configs",
    "ReportConfig": "alignkit.configs",
    "evaluate_model": "alignkit.evaluate.run",
    "win_rate": "alignkit.evaluate.winrate",
    "run_sweep": "alignkit.evaluate.sweep",
    "build_report": "alignkit.report.build",
    "PPOConfig": "alignkit.configs",
    "GRPOConfig": "alignkit.configs",
    "RLOOConfig": "alignkit.configs",
    "RewardSpec": "alignkit.configs",
    "train_ppo": "alignkit.train.ppo",
    "train_grpo": "alignkit.train.grpo",
    "train_rloo": "alignkit.train.grpo",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'alignkit' has no attribute {name!r}")
