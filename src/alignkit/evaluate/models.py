"""The two models an evaluation compares: the trained one and its reference.

When the trained model is a LoRA adapter on the reference, one copy of the weights serves both:
the reference is the adapter switched off (as in training). Otherwise both are loaded.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from peft import PeftModel

from alignkit.errors import AlignkitError
from alignkit.models.loading import (
    checkpoint_run_config,
    is_checkpoint,
    load_model_and_tokenizer,
    resolve_model_path,
)


def run_config(model: str) -> dict:
    """The resolved config.yaml of the run that wrote ``model`` (a run directory, its final/ or one of its
    checkpoint-N/ folders), else {}."""
    path = Path(model)
    if is_checkpoint(path):
        return checkpoint_run_config(path)
    for candidate in (path / "config.yaml", path.parent / "config.yaml"):
        if candidate.is_file() and (candidate.parent / "final").is_dir():
            return yaml.safe_load(candidate.read_text(encoding="utf-8")) or {}
    return {}


def default_reference(model: str) -> str:
    """The model a run started from (its config's ``model``), or an adapter's base model."""
    started_from = run_config(model).get("model")
    if started_from:
        return started_from
    adapter = Path(resolve_model_path(model)) / "adapter_config.json"
    if adapter.is_file():
        return json.loads(adapter.read_text())["base_model_name_or_path"]
    raise AlignkitError(
        f"cannot tell which model '{model}' was trained from (no run config.yaml, not an adapter); pass --reference"
    )


def _same_model(a: str, b: str) -> bool:
    ra, rb = resolve_model_path(a), resolve_model_path(b)
    return Path(ra).resolve() == Path(rb).resolve() if Path(ra).exists() and Path(rb).exists() else ra == rb


@dataclass
class EvalModels:
    """The model under evaluation and its reference (a second model, or the policy with its adapter off)."""

    policy: torch.nn.Module
    tokenizer: object
    reference_lm: torch.nn.Module | None  # None: the policy with its adapter disabled
    reference_name: str

    @contextmanager
    def reference(self):
        """The reference model (no second copy when the policy is an adapter on it)."""
        if self.reference_lm is not None:
            yield self.reference_lm
            return
        with self.policy.disable_adapter():
            yield self.policy

    @property
    def shares_weights(self) -> bool:
        """Whether the reference is the policy itself with its adapter disabled (one copy of the weights)."""
        return self.reference_lm is None


def load_eval_models(model: str, reference: str | None = None, dtype: str = "float32") -> EvalModels:
    """The policy to evaluate and its reference: a LoRA run's adapter over its base (reference: adapters off),
    or a full model against the model it started from."""
    reference = reference or default_reference(model)
    path = Path(resolve_model_path(model))
    adapter = path / "adapter_config.json"
    if adapter.is_file() and _same_model(json.loads(adapter.read_text())["base_model_name_or_path"], reference):
        base, tokenizer = load_model_and_tokenizer(reference, dtype)
        policy = PeftModel.from_pretrained(base, str(path)).eval()
        return EvalModels(policy, tokenizer, None, reference)
    policy, tokenizer = load_model_and_tokenizer(model, dtype)
    reference_lm, _ = load_model_and_tokenizer(reference, dtype)
    return EvalModels(policy.eval(), tokenizer, reference_lm.eval(), reference)


def maybe_reference(models: EvalModels, use_reference: bool):
    """A context giving the reference when ``use_reference``, else the policy."""
    return models.reference() if use_reference else nullcontext(models.policy)
