"""The files of a run directory that tools and people expect besides alignkit's own.

- ``checkpoint-N/trainer_state.json`` in transformers' ``TrainerState`` layout (``global_step``, ``epoch`` as
  a fraction, ``max_steps``, ``log_history`` ...), so scripts that plot from it work; alignkit's exact-resume
  state sits inside it under ``alignkit_state``.
- ``all_results.json``: the run's final train and eval figures (as transformers' ``Trainer`` writes).
- ``environment.json``: library versions, devices and bf16 support of the machine that trained.
- ``final/README.md``: a model card (``huggingface_hub.ModelCard``): base model, data files and their hashes,
  method, key hyper-parameters, final metrics, library versions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from alignkit.train.environment import environment
from alignkit.train.metrics_log import read_metrics

ALIGNKIT_STATE = "alignkit_state"
CARD_KEYS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "beta",
    "loss_type",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "max_length",
    "mixed_precision",
    "seed",
)


def trainer_state(loop_state: dict, config, total_steps: int, run_dir: Path, fractional_epoch: float) -> dict:
    """``trainer_state.json``: transformers' fields, the run's log so far, alignkit's own state inside."""
    step = loop_state["global_step"]
    history = (
        [r for r in read_metrics(run_dir) if r.get("step", 0) <= step] if (run_dir / "metrics.jsonl").exists() else []
    )
    return {
        "global_step": step,
        "epoch": fractional_epoch,
        "max_steps": total_steps,
        "num_train_epochs": config.num_train_epochs,
        "logging_steps": config.logging_steps,
        "eval_steps": config.eval_steps,
        "save_steps": config.save_steps,
        "train_batch_size": config.per_device_train_batch_size,
        "log_history": history,
        "best_metric": None,
        "best_model_checkpoint": None,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        ALIGNKIT_STATE: loop_state,
    }


def loop_state_of(saved: dict) -> dict:
    """alignkit's loop state from a ``trainer_state.json`` (checkpoints before this layout held it flat)."""
    return saved.get(ALIGNKIT_STATE, saved)


def write_results(run_dir: Path, train: dict, evaluation: dict) -> None:
    """``all_results.json`` (final train figures, eval figures as ``eval_*``) and ``environment.json``."""
    results = {k: v for k, v in train.items() if isinstance(v, (int, float))}
    results.update({k.replace("/", "_"): v for k, v in evaluation.items() if isinstance(v, (int, float))})
    (run_dir / "all_results.json").write_text(json.dumps(results, indent=1))
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=1))


def file_sha256(path: str | None) -> str | None:
    """sha256 of a data file (None for a folder, a hub id or nothing)."""
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_model_card(folder: Path, config, method: str, train: dict, evaluation: dict) -> None:
    """``folder/README.md``: a model card a hub page or a person can read."""
    data = [(name, getattr(config, name, None)) for name in ("train_data", "eval_data")]
    versions = environment()
    card_data = ModelCardData(
        base_model=config.model if config.model != "embedded" else "HuggingFaceTB/SmolLM2-135M-Instruct",
        library_name="peft" if getattr(config, "use_peft", False) else "transformers",
        tags=["alignkit", method],
    )
    lines = [
        "---",
        card_data.to_yaml(),
        "---",
        f"# {Path(config.output_dir).name}",
        "",
        f"Trained with alignkit `{method}` from `{config.model}`.",
        "",
        "## Data",
        *(f"- {name}: `{path}` (sha256 `{file_sha256(path)}`)" for name, path in data if path),
        "",
        "## Hyper-parameters",
        *(f"- {key}: {getattr(config, key)}" for key in CARD_KEYS if hasattr(config, key)),
        "",
        "## Final metrics",
        *(f"- {k}: {v:.4g}" for k, v in {**train, **evaluation}.items() if isinstance(v, float)),
        "",
        "## Libraries",
        *(f"- {k}: {versions[k]}" for k in ("alignkit", "torch", "transformers", "peft", "accelerate")),
        "",
    ]
    ModelCard("\n".join(lines)).save(folder / "README.md")
