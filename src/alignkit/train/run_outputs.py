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

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from alignkit.engine.fingerprint import file_digest
from alignkit.models.embedded import cache_dir
from alignkit.train.environment import environment
from alignkit.train.metrics_log import TIMING_KEYS, read_metrics

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


def _data_sha256(path: str) -> str | None:
    """sha256 of a data file, streamed and kept in the hash store (None for a folder or a hub id)."""
    return file_digest(Path(path), cache_dir()) if Path(path).is_file() else None


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
        *(f"- {name}: `{path}` (sha256 `{_data_sha256(path)}`)" for name, path in data if path),
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


EVAL_START, EVAL_END = "<!-- alignkit eval -->", "<!-- /alignkit eval -->"


def add_eval_to_model_card(folder: Path, results: dict) -> bool:
    """Put ``alignkit eval``'s results (win-rate with its interval, reward accuracy, probes) into the model card
    of ``folder`` (a run's final/), replacing those of an earlier eval; False when the folder has no card."""
    card_path = folder / "README.md"
    if not card_path.is_file():
        return False
    lines = [EVAL_START, "## Evaluation (alignkit eval)", ""]
    win = results.get("win_rate")
    if win:
        lines.append(
            f"- win-rate vs `{results.get('reference')}`: {win['win_rate']:.3f} (95% CI {win['ci_low']:.3f}-"
            f"{win['ci_high']:.3f}; {win['wins']} wins, {win['ties']} ties, {win['losses']} losses; {win['judge']})"
        )
    accuracy = results.get("reward_accuracy")
    if accuracy:
        lines.append(f"- held-out reward accuracy: {accuracy['accuracy']:.3f} on {accuracy['pairs']} pairs")
    for probe in results.get("probes") or []:
        flag = " (regressed)" if probe.get("regressed") else ""
        lines.append(f"- probe {probe['probe']}: {probe['before']:.3f} -> {probe['after']:.3f}{flag}")
    lines.append(EVAL_END)
    text = card_path.read_text(encoding="utf-8")
    if EVAL_START in text and EVAL_END in text:
        text = text[: text.index(EVAL_START)] + text[text.index(EVAL_END) + len(EVAL_END) :].lstrip("\n")
    ModelCard(text.rstrip() + "\n\n" + "\n".join(lines) + "\n").save(card_path)
    return True


# What the generated reference (docs/reference/) lists: every file a training run writes and every metric its
# logs hold. tests/test_docs.py fails when a run writes a file or logs a metric that is not described here.
RUN_FILES = {
    ".alignkit-run": "Marks a directory alignkit created: --overwrite replaces only a run directory.",
    "config.yaml": "The resolved config: every key, defaults included (what --resume checks against).",
    "metrics.jsonl": "One JSON object per log (training, evaluation, symptom warnings, the final summary).",
    "tensorboard/": "The same metrics for TensorBoard (purged of discarded steps on --resume).",
    "wandb/": "With report_to: wandb, the wandb run (offline or online).",
    "wandb_run_id": "The wandb run's id, so that --resume continues the same run.",
    "checkpoint-N/": "Every save_steps and at the end: trainable.safetensors, optimizer.pt, scheduler.pt, "
    "rng_state_0.pt, trainer_state.json (transformers' layout, log_history included) and manifest.json "
    "(checksums); written atomically; loads as a model (--model RUN/checkpoint-N).",
    "final/": "save_pretrained output (a PEFT adapter, or the full model), the tokenizer and README.md (a model "
    "card); PPO adds value_head.safetensors.",
    "all_results.json": "The final train and eval figures, as transformers' Trainer writes them.",
    "environment.json": "Library versions, devices and bf16 support of the machine that trained.",
    "samples.jsonl": "RL: sampled prompts, responses and rewards every sample_every steps.",
    "judge_cache.jsonl": "RL with a judge reward: the judge's replies, so a resumed run does not ask twice.",
}
METRICS = {
    "step": "The optimizer step the record belongs to.",
    "epoch": "Epochs done (fractional).",
    "loss": "The training loss of the method (mean over the logging window).",
    "grad_norm": "Global gradient norm before clipping.",
    "learning_rate": "The learning rate after the step.",
    "step_time": "Seconds per optimizer step in the logging window (training work only).",
    "samples_per_second": "Examples (pairs, rows, rollouts) per second in the window, over all processes.",
    "tokens_per_second": "Real tokens (never padding) per second in the window, over all processes.",
    "train_runtime": "Summary: wall time of the run (as transformers' Trainer).",
    "train_samples_per_second": "Summary: examples per second over the run.",
    "train_steps_per_second": "Summary: optimizer steps per second over the run.",
    "train_tokens_per_second": "Summary: real tokens per second over the run.",
    "nonfinite_steps_skipped": "Updates skipped so far because a loss or gradient was NaN/inf.",
    "nonfinite_updates_skipped": "RL: minibatch updates skipped so far for a NaN/inf loss or gradient.",
    "rewards/chosen": "DPO family, KTO: beta x (policy - reference) log-prob of chosen (desirable) answers; "
    "reward models: the score of chosen answers.",
    "rewards/rejected": "The same for rejected (undesirable) answers.",
    "rewards/margins": "rewards/chosen - rewards/rejected.",
    "rewards/accuracies": "Fraction of pairs whose chosen reward beats the rejected one.",
    "logps/chosen": "Policy log-prob of chosen answers (summed over response tokens).",
    "logps/rejected": "Policy log-prob of rejected answers.",
    "logps/rejected_per_token": "DPO: the rejected log-prob per response token.",
    "logps/rejected_vs_ref_per_token": "DPO: how far the policy moved rejected answers from the reference, per "
    "token (0 before any update; falling fast is the 'rejected collapsing' symptom).",
    "nll_loss": "ORPO, DPO with rpo_alpha: the NLL of chosen answers per token.",
    "log_odds_ratio": "ORPO: log-sigmoid of the log-odds ratio of chosen over rejected.",
    "log_odds_chosen": "ORPO: the log-odds ratio of chosen over rejected.",
    "kl": "KTO: the batch's KL estimate between policy and reference (the reference point).",
    "accuracy": "Reward model: fraction of pairs scored chosen > rejected.",
    "margin": "Reward model: mean chosen score - rejected score.",
    "scored_tokens": "SFT: tokens the loss covered (assistant tokens) per batch.",
    "loss/total": "RL: the whole loss of a minibatch update.",
    "loss/policy": "PPO: the clipped policy loss.",
    "loss/value": "PPO: the clipped value loss.",
    "reward/score": "RL: mean reward of the step's samples (all terms, weighted).",
    "reward/score_std": "RL: standard deviation of the samples' rewards.",
    "reward/<term>": "RL: the mean of one reward term (verifier, length, regex0, python1, reward_model, judge).",
    "rewards/with_kl_penalty": "RLOO: mean reward after the KL penalty.",
    "objective/kl": "RL: mean sequence KL between policy and reference at sampling.",
    "objective/entropy": "RL: mean per-token entropy of the policy at sampling.",
    "objective/kl_coef": "RL: the KL coefficient in use (adaptive KL moves it).",
    "policy/approx_kl": "PPO, RLOO: approximate KL between old and new policy over the update.",
    "policy/clipfrac": "RL: fraction of tokens whose ratio was clipped.",
    "policy/k3_kl": "GRPO: the k3 KL estimate in the loss.",
    "value/clipfrac": "PPO: fraction of values clipped.",
    "values/mean": "PPO: mean value estimate.",
    "returns/mean": "PPO: mean return.",
    "advantages/mean": "PPO: mean advantage before whitening.",
    "advantages/std": "PPO: advantage standard deviation before whitening.",
    "advantages/abs_mean": "GRPO: mean absolute group-normalised advantage.",
    "response_length": "RL: mean response tokens of the step's samples.",
    "truncated_fraction": "RL: fraction of samples cut at max_new_tokens (no end-of-turn).",
    "response_words": "RL evaluation: mean words of the greedy held-out answers.",
    "count/chosen": "KTO: desirable examples in the window.",
    "count/rejected": "KTO: undesirable examples in the window.",
    "symptom": "A symptom warning's name (its record also holds message and advice).",
    "message": "A symptom warning: what happened.",
    "advice": "A symptom warning: what to do.",
}
# The metrics each method logs besides the shared ones (step, epoch, loss, grad_norm, learning_rate, throughput,
# summaries); tests/test_docs.py trains each method and compares. The docs' per-method pages come from these.
SHARED_METRICS = ("step", "epoch", "grad_norm", "learning_rate", *sorted(TIMING_KEYS))
PREFERENCE_METRICS = ("loss", "nonfinite_steps_skipped", "rewards/chosen", "rewards/rejected")
RL_METRICS = (
    "loss/total",
    "nonfinite_updates_skipped",
    "reward/score",
    "reward/score_std",
    "reward/<term>",
    "objective/kl",
    "objective/entropy",
    "objective/kl_coef",
    "policy/clipfrac",
    "response_length",
    "truncated_fraction",
    "response_words",
)
METHOD_METRICS = {
    "dpo": (
        *PREFERENCE_METRICS,
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "logps/rejected_per_token",
        "logps/rejected_vs_ref_per_token",
    ),
    "kto": (*PREFERENCE_METRICS, "rewards/margins", "logps/chosen", "logps/rejected", "kl"),
    "orpo": (
        *PREFERENCE_METRICS,
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "nll_loss",
        "log_odds_ratio",
        "log_odds_chosen",
    ),
    "reward": (*PREFERENCE_METRICS, "accuracy", "margin"),
    "sft": ("loss", "nonfinite_steps_skipped", "scored_tokens"),
    "ppo": (
        *RL_METRICS,
        "loss/policy",
        "loss/value",
        "policy/approx_kl",
        "value/clipfrac",
        "values/mean",
        "returns/mean",
        "advantages/mean",
        "advantages/std",
    ),
    "grpo": (*RL_METRICS, "policy/k3_kl", "advantages/abs_mean"),
    "rloo": (*RL_METRICS, "policy/approx_kl", "rewards/with_kl_penalty"),
}
