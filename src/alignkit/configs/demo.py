"""`alignkit demo`'s config: DPO's fields with the demo's own defaults (only those that differ are
named here, each with its reason), plus how the demo builds its data."""

from __future__ import annotations

import typing

from pydantic import Field

from alignkit.configs.base import new_default
from alignkit.configs.methods import DPOConfig


class DemoConfig(DPOConfig):
    """`alignkit demo`: DPO on the embedded model teaching it to answer directly and admit uncertainty."""

    output_dir: str = new_default(DPOConfig, "output_dir", "", "Default for the demo: alignkit-runs/demo-<timestamp>.")
    use_peft: bool = new_default(DPOConfig, "use_peft", True, "On for the demo (set false for full fine-tuning).")
    eval_split: float = new_default(DPOConfig, "eval_split", 0.1, "The demo holds out a tenth of its pairs.")
    learning_rate: float = new_default(
        DPOConfig,
        "learning_rate",
        8e-4,
        (
            "8e-4 held up best for LoRA over this short run on held-out prompts "
            "(see the README's demo table; the doctor notes "
            "it is above the usual LoRA range); use ~5e-6 with use_peft false."
        ),
    )
    rpo_alpha: float | None = new_default(
        DPOConfig,
        "rpo_alpha",
        1.0,
        (
            "On for the demo: the NLL of the chosen answers keeps them likely and "
            "makes the lesson carry to unseen phrasings."
        ),
    )
    logging_steps: int = new_default(DPOConfig, "logging_steps", 2, "The demo's run is short.")
    precompute_ref_log_probs: bool = new_default(
        DPOConfig, "precompute_ref_log_probs", True, "The demo: always (cached across reruns)."
    )
    save_steps: int = new_default(DPOConfig, "save_steps", 1000, "The demo saves at the end only.")
    gradient_checkpointing: bool = new_default(
        DPOConfig,
        "gradient_checkpointing",
        False,
        ("Off for the demo: its sequences are short, so memory is small and speed matters."),
    )
    max_length: int = new_default(DPOConfig, "max_length", 192, "The demo's pairs are short.")
    max_prompt_length: int | None = new_default(DPOConfig, "max_prompt_length", 96)
    num_train_prompts: int = Field(
        200,
        ge=4,
        description="Training prompts to build pairs from (45% arithmetic, 25% unanswerable, 30% general knowledge).",
    )
    num_eval_prompts: int = Field(
        80,
        ge=4,
        description="Held-out prompts for before/after evaluation, in phrasings, question "
        "shapes and facts that no training prompt uses.",
    )
    max_new_tokens: int = Field(48, ge=4, description="Generation length for candidates and evaluation answers.")
    generation_batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")
    hedge_pair_every: int = Field(
        10,
        ge=0,
        description="One answerable training prompt in this many also gets a (correct "
        'answer > "I\'m not sure") pair, so the model declines only what '
        "cannot be known; 0: none.",
    )
    retention_pairs: bool = Field(
        True,
        description="Train on general-knowledge prompts the model already answers (its "
        "short correct answer preferred), so it keeps what it knows.",
    )
    show_samples: int = Field(5, ge=0, description="Held-out answers printed before/after.")

    requires_train_data: typing.ClassVar[bool] = False
