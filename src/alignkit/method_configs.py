"""Configs of the commands beyond DPO, one per command (see ``config.py`` for the shared fields)."""
from __future__ import annotations

import typing

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alignkit.config import EMBEDDED_MODEL, TrainConfig


class SFTConfig(TrainConfig):
    """`alignkit sft`: supervised fine-tuning on `messages` conversations or prompt/completion rows;
    the loss covers only what the assistant says."""

    learning_rate: float = Field(2e-5, gt=0.0, description="Peak learning rate (AdamW); ~2e-5 full fine-tuning, ~2e-4 LoRA.")
    packing: bool = Field(False, description="Group examples into bins of max_length tokens (first-fit decreasing); each bin counts as one example of the batch. Examples never attend to each other.")
    max_prompt_length: int | None = Field(None, ge=1, description="Maximum prompt tokens of prompt/completion rows (trimmed from the left); None: no separate limit.")


class RewardConfig(TrainConfig):
    """`alignkit reward`: a Bradley-Terry reward model (one-output sequence classifier) on
    prompt/chosen/rejected pairs; an optional per-pair `margin` field is subtracted inside the loss."""

    learning_rate: float = Field(1e-5, gt=0.0, description="Peak learning rate (AdamW); ~1e-5 full fine-tuning, ~1e-4 LoRA.")
    center_rewards_coefficient: float | None = Field(None, ge=0.0, description="Add this x mean((r_w + r_l)^2) to keep rewards centred at 0 (None disables).")


class KTOConfig(TrainConfig):
    """`alignkit kto`: KTO on unpaired prompt/completion/label rows (or pairs, split into a desirable
    and an undesirable row)."""

    learning_rate: float = Field(5e-7, gt=0.0, description="Peak learning rate (AdamW); KTO likes small steps (~5e-7 full, ~5e-5 LoRA).")
    beta: float = Field(0.1, gt=0.0, description="Strength of the KL constraint to the reference model.")
    desirable_weight: float = Field(1.0, gt=0.0, description="Weight of desirable examples' losses.")
    undesirable_weight: float = Field(1.0, gt=0.0, description="Weight of undesirable examples' losses (keep desirable_weight x n_desirable / (undesirable_weight x n_undesirable) in [1, 4/3]).")
    precompute_ref_log_probs: bool | typing.Literal["auto"] = Field("auto", description="Compute reference log-probs (and KL terms) once before training and cache them on disk; auto: as for DPO (see DPOConfig).")


class ORPOConfig(TrainConfig):
    """`alignkit orpo`: one-stage alignment with no reference model: NLL on chosen plus
    beta x the odds-ratio loss of chosen over rejected."""

    learning_rate: float = Field(8e-6, gt=0.0, description="Peak learning rate (AdamW); the paper uses 8e-6 full fine-tuning.")
    beta: float = Field(0.1, gt=0.0, description="lambda: weight of the odds-ratio term against the NLL (TRL calls it beta).")


class ScoreConfig(BaseModel):
    """`alignkit score`: score pairs with a reward model and report held-out pairwise accuracy."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(..., description="Reward model: a folder written by `alignkit reward` (final/), or any sequence-classification checkpoint with one output.")
    data: str = Field(..., description="Pairs to score: prompt/chosen/rejected in any supported format.")
    output: str | None = Field(None, description="Write per-pair scores here as JSONL (never overwrites an existing file unless overwrite is true).")
    overwrite: bool = Field(False, description="Replace an existing output file.")
    batch_size: int = Field(16, ge=1, description="Pairs per batch.")
    max_length: int = Field(1024, ge=8, description="Maximum tokens of prompt + response.")
    max_prompt_length: int | None = Field(None, ge=1, description="Maximum prompt tokens (trimmed from the left); None: no separate limit.")
    apply_chat_template: bool = Field(True, description="Format like training did: the chat template when the tokenizer has one.")
    dtype: typing.Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")

    @model_validator(mode="after")
    def _check(self) -> "ScoreConfig":
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length ({self.max_length})")
        return self


__all__ = ["EMBEDDED_MODEL", "KTOConfig", "ORPOConfig", "RewardConfig", "SFTConfig", "ScoreConfig"]
