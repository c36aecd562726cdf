"""DPO family (sigmoid, robust/cDPO, hinge, IPO, SimPO, + optional RPO NLL): a loss over
log-prob tensors plus this thin step; the loop is shared."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from alignkit.configs import DPOConfig
from alignkit.data.collate import ChosenRejected, PreferenceCollator
from alignkit.data.preference import PreferenceExample
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
    """One step: policy log-probs (chosen and rejected in one forward), the reference's (no grad; none for
    reference-free losses), the loss; returns (loss, metrics)."""
    out = model(batch)
    policy, tokens = ChosenRejected.split(out.logps), ChosenRejected.split(out.token_counts)
    ref = ChosenRejected.split(reference(batch)) if reference is not None else None
    losses, chosen_rewards, rejected_rewards = preference_loss(
        config.loss_type, policy, ref, tokens, config.beta, config.label_smoothing, config.simpo_gamma
    )
    loss = losses.mean()
    metrics = preference_metrics(chosen_rewards, rejected_rewards, policy.chosen, policy.rejected)
    rejected_tokens = tokens.rejected.clamp(min=1)
    metrics["logps/rejected_per_token"] = (policy.rejected.detach() / rejected_tokens).mean()
    if ref is not None:  # how far the policy moved rejected answers from the reference, per token (0 before any update)
        metrics["logps/rejected_vs_ref_per_token"] = (
            (policy.rejected.detach() - ref.rejected) / rejected_tokens
        ).mean()
    if config.rpo_alpha is not None:
        nll = nll_loss(policy.chosen, tokens.chosen)
        loss = loss + config.rpo_alpha * nll
        metrics["nll_loss"] = nll.detach()
    return loss, {"loss": loss.detach(), **metrics}


def train_dpo(
    config: DPOConfig,
    train_examples: list[PreferenceExample] | None = None,
    eval_examples: list[PreferenceExample] | None = None,
    run_dir: Path | None = None,
    on_step=None,
) -> TrainingResult:
    """Train with a DPO-family loss. Data is validated before anything is written; pass examples to
    skip loading. ``on_step(global_step)`` is called after every optimizer step."""
    run = begin_training(config, "dpo", train_examples, eval_examples, run_dir)
    lm, tokenizer = run.lm, run.tokenizer
    policy = LogProbModel(lm, config.logprob_chunk_size)
    train_items = [{"pair": p} for p in run.train.items]
    eval_items = [{"pair": p} for p in run.eval.items]
    collate = run.collator(PreferenceCollator, config)
    reference = (
        None
        if config.loss_type in REFERENCE_FREE
        else make_reference(config, policy, collate, [train_items, eval_items], tokenizer)
    )
    task = TrainingTask(
        model=policy,
        train_items=train_items,
        eval_items=eval_items or None,
        collate=collate,
        compute_loss=partial(dpo_compute_loss, reference=reference, config=config),
        reference=reference,
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
    )
    return run_training(config, task, run.run_dir)
