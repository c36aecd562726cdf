"""Configs of the evaluation commands: `alignkit eval`, `alignkit sweep`, `alignkit report`."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alignkit.configs.data import JudgeFields, ScorerFields
from alignkit.configs.methods import DPOConfig

PROBES = ("perplexity", "arithmetic", "facts")


class EvalFields(ScorerFields, JudgeFields):
    """What `eval` measures and how; `sweep` evaluates every run with the same fields."""

    prompts: str | None = Field(
        None,
        description="Held-out prompt rows for win-rate (.jsonl/.json/.parquet): `prompt`, "
        "optional `answer`/`tests` for the verifier. Default: the prompts of "
        "`pairs`.",
    )
    pairs: str | None = Field(
        None, description="Held-out prompt/chosen/rejected pairs for reward accuracy. Default: the run's eval_data."
    )
    max_prompts: int | None = Field(100, ge=1, description="Use at most this many prompts and pairs (None: all).")
    eval_judge: Literal["auto", "llm", "verifier", "heuristic", "reward_model", "none"] = Field(
        "auto",
        description=(
            "Who decides each win-rate comparison: llm (judge_base_url; "
            "position-swapped), verifier (prompts with `answer`/`tests`), "
            "heuristic, "
            "reward_model, or none (skip win-rate). auto: llm if judge_base_url is "
            "set, else verifier if every prompt has an answer, else reward_model "
            "if set, else none."
        ),
    )
    max_new_tokens: int = Field(128, ge=1, description="Answer length for win-rate and probes.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of answers (0: greedy, reproducible).")
    system_prompt: str | None = Field(
        None, description="System prompt for both models' answers (None: the models' default)."
    )
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch; pairs per log-prob batch.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    beta: float | None = Field(
        None, gt=0, description="beta of the implicit reward (default: the run's beta, else 0.1)."
    )
    max_length: int | None = Field(
        None, ge=8, description="Tokens of prompt + response for reward accuracy (default: the run's, else 1024)."
    )
    max_prompt_length: int | None = Field(
        None, ge=1, description="Prompt tokens for reward accuracy (default: the run's, else no separate limit)."
    )
    probes: list[Literal["perplexity", "arithmetic", "facts"]] = Field(
        default_factory=lambda: list(PROBES),
        description="Capability probes run on both models: perplexity (general text), arithmetic, facts.",
    )
    probe_size: int = Field(36, ge=1, description="Questions per arithmetic/facts probe.")
    perplexity_text: str | None = Field(
        None,
        description="Held-out general text for the perplexity probe (paragraphs separated "
        "by blank lines; default: a shipped passage).",
    )
    lm_eval_tasks: list[str] = Field(
        default_factory=list,
        description="lm-evaluation-harness tasks to run before/after (needs the [eval] "
        "extra and the tasks' data), e.g. [mmlu, hellaswag].",
    )
    lm_eval_limit: int | None = Field(None, ge=1, description="Examples per lm-eval task (None: all).")
    regression_tolerance: float = Field(
        0.02, ge=0, description="An accuracy probe regresses when it drops by more than this."
    )
    perplexity_tolerance: float = Field(
        0.05, ge=0, description="Perplexity regresses when it rises by more than this fraction."
    )
    inspect: int = Field(20, ge=0, description="Prompts in the manual inspection sheet (inspection.md / .html).")
    n_bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples for the win-rate's 95% interval.")


class EvalConfig(EvalFields):
    """`alignkit eval`: win-rate vs the reference, held-out reward accuracy, capability probes and an inspection
    sheet."""

    model: str = Field(
        ..., description="The trained model: an alignkit run directory, its final/ folder, or any model folder/hub id."
    )
    reference: str | None = Field(
        None, description="The model to compare against (default: the model the run started from)."
    )
    output_dir: str | None = Field(
        None, description="Where to write the results (default: <run>/eval, or alignkit-runs/eval-<name>)."
    )
    overwrite: bool = Field(False, description="Replace an existing eval directory.")

    def cache_path(self) -> str:
        """The judge's reply cache: ``cache``, else ``<output_dir>/judge_cache.jsonl``."""
        return self.cache or str(Path(self.output_dir or ".") / "judge_cache.jsonl")


class SweepConfig(DPOConfig):
    """`alignkit sweep`: one DPO run per beta (reference log-probs computed once and reused), each
    evaluated, and a recommended beta: the best win-rate among runs without capability regression."""

    beta: list[float] = Field(
        default_factory=lambda: [0.05, 0.1, 0.5, 1.0], description="The betas to try, e.g. --beta 0.05,0.1,0.5,1.0."
    )  # type: ignore[assignment]
    output_dir: str = Field(
        "alignkit-runs/sweep", description="Sweep directory: one run per beta (beta-<value>/), sweep.json, sweep.png."
    )
    precompute_ref_log_probs: bool = Field(
        True, description="Compute reference log-probs once and reuse them for every beta."
    )
    eval: EvalFields = Field(
        default_factory=EvalFields,
        description="How each run is evaluated (the fields of `alignkit eval`), e.g. "
        "{prompts: held.jsonl, probes: [facts]}.",
    )

    @model_validator(mode="after")
    def _check_betas(self) -> "SweepConfig":
        if not self.beta or any(b <= 0 for b in self.beta):
            raise ValueError(f"beta must be a list of positive values, got {self.beta}")
        if len(set(self.beta)) != len(self.beta):
            raise ValueError(f"beta lists a value twice: {self.beta}")
        return self


class ReportConfig(BaseModel):
    """`alignkit report RUN_DIR [RUN_DIR ...]`: a self-contained HTML report and a markdown summary."""

    model_config = ConfigDict(extra="forbid")

    runs: list[str] = Field(
        ...,
        min_length=1,
        description="Run directories (training runs, eval directories inside them, or sweep directories).",
    )
    output_dir: str | None = Field(
        None, description="Where to write report.html and report.md (default: the first run directory)."
    )
    overwrite: bool = Field(True, description="Replace an existing report (reports are derived, nothing is lost).")

    requires_train_data: typing.ClassVar[bool] = False


class ScoreConfig(BaseModel):
    """`alignkit score`: score pairs with a reward model and report held-out pairwise accuracy."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        ...,
        description="Reward model: a folder written by `alignkit reward` (final/), or any "
        "sequence-classification checkpoint with one output.",
    )
    data: str = Field(..., description="Pairs to score: prompt/chosen/rejected in any supported format.")
    output: str | None = Field(
        None,
        description="Write per-pair scores here as JSONL (never overwrites an existing file unless overwrite is true).",
    )
    overwrite: bool = Field(False, description="Replace an existing output file.")
    batch_size: int = Field(16, ge=1, description="Pairs per batch.")
    max_length: int = Field(1024, ge=8, description="Maximum tokens of prompt + response.")
    max_prompt_length: int | None = Field(
        None, ge=1, description="Maximum prompt tokens (trimmed from the left); None: no separate limit."
    )
    apply_chat_template: bool = Field(
        True, description="Format like training did: the chat template when the tokenizer has one."
    )
    dtype: typing.Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")

    @model_validator(mode="after")
    def _check(self) -> "ScoreConfig":
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length ({self.max_length})"
            )
        return self


class EnvConfig(BaseModel):
    """`alignkit env`: takes no keys."""

    model_config = ConfigDict(extra="forbid")
