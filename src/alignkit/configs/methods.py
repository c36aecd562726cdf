"""Configs of the training commands on preference and SFT data (shared fields: :mod:`alignkit.configs.base`)."""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import Field

from alignkit.configs.base import TrainConfig, described, new_default


class DPOConfig(TrainConfig):
    """`alignkit dpo`: Direct Preference Optimization on prompt/chosen/rejected pairs."""

    command: typing.ClassVar[str | None] = "dpo"

    beta: float = Field(
        0.1, gt=0.0, description="Strength of the KL constraint to the reference model (higher stays closer)."
    )
    loss_type: Literal["sigmoid", "robust", "hinge", "ipo", "simpo"] = Field(
        "sigmoid",
        description=(
            "Preference loss: sigmoid (DPO; with label_smoothing > 0 it is conservative cDPO), robust (unbiased under "
            "label_smoothing flipped labels), hinge (SLiC), ipo (squared distance of the length-averaged log-ratio "
            "difference to 1/(2 beta)), simpo (reference-free, length-normalised, target margin simpo_gamma)."
        ),
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="Assumed fraction of flipped labels (sigmoid: cDPO; robust: robust DPO); 0 is plain DPO.",
    )
    simpo_gamma: float = Field(
        0.5,
        ge=0.0,
        description="SimPO target reward margin gamma (loss_type simpo; the paper uses "
        "beta 2-2.5 with gamma ~0.5-1.4).",
    )
    rpo_alpha: float | None = Field(
        None, ge=0.0, description="Add rpo_alpha x the NLL of the chosen responses (RPO); None disables it."
    )
    precompute_ref_log_probs: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "Compute reference log-probs once before training (cached on disk, "
            "keyed by model, data and tokenization) instead of a "
            "reference forward every step. auto: yes for full fine-tuning (the "
            "frozen copy leaves memory) and for runs that score "
            "every training pair at least once; a LoRA run shorter than an epoch keeps the live reference."
        ),
    )


class SFTConfig(TrainConfig):
    """`alignkit sft`: supervised fine-tuning on `messages` conversations or prompt/completion rows;
    the loss covers only what the assistant says."""

    command: typing.ClassVar[str | None] = "sft"

    learning_rate: float = Field(
        2e-5, gt=0.0, description="Peak learning rate (AdamW); ~2e-5 full fine-tuning, ~2e-4 LoRA."
    )
    packing: bool = Field(
        False,
        description="Group examples into bins of max_length tokens (first-fit decreasing); "
        "each bin counts as one example of the batch. Examples never attend to "
        "each other.",
    )
    max_prompt_length: int | None = described(
        TrainConfig,
        "max_prompt_length",
        "Maximum prompt tokens of prompt/completion rows (trimmed from the left); None: no separate limit.",
    )
    disable_dropout: bool = new_default(
        TrainConfig, "disable_dropout", False, "(Default here: false, as in TRL's SFT.)"
    )


class RewardConfig(TrainConfig):
    """`alignkit reward`: a Bradley-Terry reward model (one-output sequence classifier) on
    prompt/chosen/rejected pairs; an optional per-pair `margin` field is subtracted inside the loss."""

    command: typing.ClassVar[str | None] = "reward"

    learning_rate: float = Field(
        1e-5, gt=0.0, description="Peak learning rate (AdamW); ~1e-5 full fine-tuning, ~1e-4 LoRA."
    )
    center_rewards_coefficient: float | None = Field(
        None, ge=0.0, description="Add this x mean((r_w + r_l)^2) to keep rewards centred at 0 (None disables)."
    )


class KTOConfig(TrainConfig):
    """`alignkit kto`: KTO on unpaired prompt/completion/label rows (or pairs, split into a desirable
    and an undesirable row)."""

    command: typing.ClassVar[str | None] = "kto"

    learning_rate: float = Field(
        5e-7, gt=0.0, description="Peak learning rate (AdamW); KTO likes small steps (~5e-7 full, ~5e-5 LoRA)."
    )
    beta: float = Field(0.1, gt=0.0, description="Strength of the KL constraint to the reference model.")
    desirable_weight: float = Field(1.0, gt=0.0, description="Weight of desirable examples' losses.")
    undesirable_weight: float = Field(
        1.0,
        gt=0.0,
        description="Weight of undesirable examples' losses (keep desirable_weight x "
        "n_desirable / (undesirable_weight x n_undesirable) in [1, 4/3]).",
    )
    precompute_ref_log_probs: bool | typing.Literal["auto"] = Field(
        "auto",
        description="Compute reference log-probs (and KL terms) once before training and "
        "cache them on disk; auto: as for DPO (see DPOConfig).",
    )


class ORPOConfig(TrainConfig):
    """`alignkit orpo`: one-stage alignment with no reference model: NLL on chosen plus
    beta x the odds-ratio loss of chosen over rejected."""

    command: typing.ClassVar[str | None] = "orpo"

    learning_rate: float = Field(
        8e-6, gt=0.0, description="Peak learning rate (AdamW); the paper uses 8e-6 full fine-tuning."
    )
    beta: float = Field(
        0.1, gt=0.0, description="lambda: weight of the odds-ratio term against the NLL (TRL calls it beta)."
    )
