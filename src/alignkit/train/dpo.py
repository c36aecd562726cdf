"""DPO family (sigmoid, robust/cDPO, hinge, IPO, SimPO, + optional RPO NLL): a loss over
log-prob tensors plus this thin step; the loop is shared."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from alignkit.config import DPOConfig
from alignkit.data.collate import PreferenceCollator
from alignkit.data.preference import PreferenceExample, load_preference_data
from alignkit.data.records import load_train_eval
from alignkit.data.tokenize import tokenize_pairs
from alignkit.engine.logprobs import LogProbModel
from alignkit.engine.reference import Reference
from alignkit.losses.preference import (
    REFERENCE_FREE,
    nll_loss,
    preference_loss,
    preference_metrics,
)
from alignkit.models.loading import save_final_model
from alignkit.train.common import begin_training, make_reference
from alignkit.train.loop import TrainingResult, TrainingTask, run_training


def dpo_compute_loss(model, batch: dict, training: bool, reference: Reference | None, config: DPOConfig):
    """One step: reference log-probs (no grad; none for reference-free losses), policy log-probs
    (chosen+rejected in one forward), loss."""
    policy = model(batch)
    logps, counts = policy.logps, policy.token_counts
    half = logps.shape[0] // 2
    ref = reference(batch) if reference is not None else logps.detach() * 0
    losses, chosen_rewards, rejected_rewards = preference_loss(
        config.loss_type, logps[:half], logps[half:], ref[:half], ref[half:], counts[:half], counts[half:],
        config.beta, config.label_smoothing, config.simpo_gamma,
    )
    loss = losses.mean()
    metrics = preference_metrics(chosen_rewards, rejected_rewards, logps[:half], logps[half:])
    metrics["logps/rejected_per_token"] = (logps[half:].detach() / counts[half:].clamp(min=1)).mean()
    if reference is not None:  # how far the policy moved rejected answers from the reference, per token (0 before any update)
        metrics["logps/rejected_vs_ref_per_token"] = ((logps[half:].detach() - ref[half:]) / counts[half:].clamp(min=1)).mean()
    if config.rpo_alpha is not None:
        nll = nll_loss(logps[:half], counts[:half])
        loss = loss + config.rpo_alpha * nll
        metrics["nll_loss"] = nll.detach()
    return loss, {"loss": loss.detach(), **metrics}


def load_dpo_data(config: DPOConfig) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """Validated train and eval pairs (eval from eval_data, or an eval_split of train_data)."""
    return load_train_eval(config, load_preference_data)


def train_dpo(config: DPOConfig, train_examples: list[PreferenceExample] | None = None, eval_examples: list[PreferenceExample] | None = None,
              run_dir: Path | None = None, on_step=None) -> TrainingResult:
    """Train with a DPO-family loss. Data is validated before anything is written; pass examples to
    skip loading. ``on_step(global_step)`` is called after every optimizer step."""
    train_examples, eval_examples, run_dir, lm, tokenizer = begin_training(config, load_preference_data, train_examples, eval_examples, run_dir)
    policy = LogProbModel(lm, config.logprob_chunk_size)
    tokenize = partial(tokenize_pairs, tokenizer=tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length, apply_chat_template=config.apply_chat_template)
    train_items = [{"pair": p} for p in tokenize(train_examples)]
    eval_items = [{"pair": p} for p in tokenize(eval_examples or [])]
    collate = PreferenceCollator(tokenizer.pad_token_id, config.padding_free, config.padding_side, config.prefix_sharing)
    reference = None if config.loss_type in REFERENCE_FREE else make_reference(config, policy, collate, [train_items, eval_items])
    task = TrainingTask(
        model=policy,
        train_items=train_items,
        eval_items=eval_items or None,
        collate=collate,
        compute_loss=partial(dpo_compute_loss, reference=reference, config=config),
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
    )
    return run_training(config, task, run_dir)
