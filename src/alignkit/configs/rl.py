"""Configs of the RL commands: `alignkit ppo`, `alignkit grpo`, `alignkit rloo`.

``train_data`` holds prompt rows (``prompt``, plus ``answer``/``tests`` for verifiable rewards);
held-out prompts come from ``eval_data`` or an ``eval_split``. One *step* (``max_steps``) is one
rollout batch: generate, score, then ``num_ppo_epochs`` passes of minibatch updates.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alignkit.configs.base import TrainConfig, described


class RewardSpec(BaseModel):
    """One term of the reward; terms are summed with their weights."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    kind: Literal["verifier", "length", "regex", "python", "reward_func", "reward_model", "judge"] = Field(
        ...,
        description=(
            "verifier: 1 when the response gives the row's `answer` (or the "
            "fraction of its `tests` passed); length: minus the word count; "
            "regex: 1 when `pattern` matches; python: your fn(row, response) -> "
            "float; reward_func: your OpenRLHF-style fn(queries, prompts, labels) -> rewards over a batch "
            "(queries: each formatted prompt and its response; labels: the rows' `label`); "
            "reward_model: an `alignkit reward` output's score; "
            "judge: an LLM judge's 1-10 grade over an OpenAI-compatible endpoint."
        ),
    )
    weight: float = Field(1.0, description="Multiplier of this term (e.g. 0.01 for length: 0.01 off per word).")
    answer_match: Literal["auto", "exact", "normalized", "contains", "final_number"] = Field(
        "auto", description="verifier: how the answer must match."
    )
    pattern: str | None = Field(None, description="regex: the pattern.")
    function: str | None = Field(None, description="python, reward_func: path/to/file.py:fn or module:fn.")
    model: str | None = Field(
        None, description="reward_model: the model folder; judge: the model name the endpoint serves."
    )
    normalize: bool = Field(
        False,
        description="reward_model: subtract the mean and divide by the std its config.json stores (OpenRLHF's "
        "normalize_reward); a model that stores none is read as it is.",
    )
    base_url: str | None = Field(None, description="judge: the endpoint, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="judge: environment variable holding the API key.")

    @model_validator(mode="after")
    def _check(self) -> "RewardSpec":
        needs = {"regex": "pattern", "python": "function", "reward_func": "function", "reward_model": "model"}
        if self.kind in needs and not getattr(self, needs[self.kind]):
            raise ValueError(f"reward kind '{self.kind}' needs '{needs[self.kind]}'")
        if self.kind == "judge" and not (self.base_url and self.model):
            raise ValueError("reward kind 'judge' needs base_url and model")
        return self


class RLConfig(TrainConfig):
    """Fields shared by PPO, GRPO and RLOO."""

    learning_rate: float = described(
        TrainConfig, "learning_rate", "Peak learning rate (AdamW); ~1e-6 full fine-tuning, ~1e-5-1e-4 with LoRA."
    )
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(kind="verifier")],
        min_length=1,  # no term: every reward 0, nothing to learn
        description=(
            "Reward terms, summed with weights, e.g. [{kind: verifier}, {kind: "
            "length, weight: 0.01}] (correct and concise)."
        ),
    )
    per_device_train_batch_size: int = described(
        TrainConfig, "per_device_train_batch_size", "Prompts per rollout batch (one step)."
    )
    num_generations: int = Field(1, ge=1, description="Completions sampled per prompt.")
    mini_batch_size: int = Field(8, ge=1, description="Sequences per optimisation minibatch.")
    num_ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch.")
    max_new_tokens: int = Field(
        64, ge=1, description="Response length limit while sampling (and for held-out evaluation)."
    )
    temperature: float = Field(
        0.7, gt=0.0, description="Sampling temperature of rollouts (held-out evaluation is greedy)."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling of rollouts.")
    missing_eos_penalty: float | None = Field(
        None, ge=0.0, description="Subtract this from the score of responses cut off before EOS (None: no penalty)."
    )
    kl_coef: float = Field(0.05, ge=0.0, description="KL penalty coefficient against the reference model.")
    kl_estimator: Literal["k1", "k3"] = Field(
        "k1", description="Per-token KL estimate: k1 = log p - log q, k3 = q/p - 1 - log(q/p) (never negative)."
    )
    cliprange: float = Field(0.2, gt=0.0, description="PPO ratio clipping.")
    cliprange_high: float | None = Field(
        None,
        gt=0.0,
        description="Upper clip of the ratio, 1 + cliprange_high (DAPO's clip-higher, TRL's epsilon_high); unset: "
        "cliprange both ways.",
    )
    eval_max_prompts: int = Field(64, ge=1, description="Held-out prompts scored (greedy) at each evaluation.")
    sample_every: int = Field(5, ge=1, description="Write sample rollouts to samples.jsonl every N steps.")
    samples_per_log: int = Field(4, ge=1, description="Rollouts written each time.")
    hacking_kl_threshold: float = Field(
        10.0,
        gt=0.0,
        description="Reward-hacking guard: warn when the reward rises while the mean KL "
        "(nats per response) exceeds this.",
    )
    length_runaway_factor: float = Field(
        2.0,
        gt=1.0,
        description="... or when responses grow past this many times their first length "
        "(or nearly all newly hit max_new_tokens).",
    )
    eval_split: float = described(
        TrainConfig, "eval_split", "Fraction of the prompts held out for evaluation when eval_data is unset."
    )
    max_prompt_length: int = Field(256, ge=1, description="Maximum prompt tokens (trimmed from the left).")
    max_length: int = described(
        TrainConfig,
        "max_length",
        "Longest prompt plus response; unless given, max_prompt_length + max_new_tokens (responses are bounded by "
        "max_new_tokens).",
    )

    @model_validator(mode="before")
    @classmethod
    def _length_from_its_parts(cls, values: Any) -> Any:
        """max_length, when not given, is the longest prompt plus the longest response, so a long
        max_prompt_length (TRL's GRPO lines give 2048) needs no max_length beside it."""
        if isinstance(values, dict) and values.get("max_length") is None:
            prompt = values.get("max_prompt_length", cls.model_fields["max_prompt_length"].default)
            new = values.get("max_new_tokens", cls.model_fields["max_new_tokens"].default)
            if isinstance(prompt, int) and isinstance(new, int) and not isinstance(prompt, bool):
                values = {**values, "max_length": prompt + new}
        return values


class PPOConfig(RLConfig):
    """`alignkit ppo`: PPO-RLHF with a value head on the policy's backbone, per-token KL penalty, GAE."""

    command: typing.ClassVar[str | None] = "ppo"

    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount factor of GAE.")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda.")
    vf_coef: float = Field(0.1, ge=0.0, description="Weight of the value loss.")
    cliprange_value: float = Field(0.2, gt=0.0, description="Value clipping.")
    whiten_advantages: bool = Field(True, description="Normalise advantages over each rollout batch.")
    adaptive_kl: bool = Field(False, description="Adapt kl_coef toward target_kl (Ziegler et al.).")
    target_kl: float = Field(6.0, gt=0.0, description="Adaptive KL target (nats per response).")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive KL horizon (in sequences).")
    value_learning_rate: float | None = Field(
        None,
        gt=0.0,
        description="Learning rate of the value head (OpenRLHF's critic learning rate); unset: learning_rate. The "
        "shared backbone trains at learning_rate.",
    )


class GroupConfig(RLConfig):
    """Group methods (GRPO, RLOO): k completions per prompt, on-policy by default, no value model."""

    num_generations: int = Field(4, ge=2, description="Completions per prompt (the group).")
    num_ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout batch (1: on-policy).")


class GRPOConfig(GroupConfig):
    """`alignkit grpo`: group-relative advantages (mean/std within each prompt's completions), KL in the loss."""

    command: typing.ClassVar[str | None] = "grpo"

    beta: float = Field(0.04, ge=0.0, description="Weight of the k3 KL term in the loss.")
    kl_coef: float = Field(  # left out of the resolved config.yaml, which then loads again
        0.05, exclude=True, description="Not read by grpo (beta weighs its KL term): refused when set."
    )
    scale_rewards: bool = Field(True, description="Divide by the group's reward std (Dr. GRPO sets false).")
    loss_type: Literal["grpo", "bnpo", "dapo", "dr_grpo"] = Field(
        "grpo",
        description="How token losses are averaged: grpo (per sequence, then over sequences), bnpo/dapo (over "
        "all tokens of a minibatch; TRL's default is dapo), dr_grpo (sum over sequences x max_new_tokens).",
    )
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token",
        description="The policy ratio per token (GRPO), or per sequence: exp of the mean token log-ratio (GSPO, "
        "with a small cliprange such as 3e-4 and loss_type grpo).",
    )

    @model_validator(mode="after")
    def _kl_weight_is_beta(self) -> "GRPOConfig":
        if "kl_coef" in self.model_fields_set:  # RLConfig's field, which only PPO's and RLOO's rewards read
            raise ValueError("alignkit grpo weighs its KL term with beta (kl_coef is PPO's and RLOO's reward penalty)")
        return self


class RLOOConfig(GroupConfig):
    """`alignkit rloo`: REINFORCE with a leave-one-out baseline; the KL penalty is part of the reward."""

    command: typing.ClassVar[str | None] = "rloo"
