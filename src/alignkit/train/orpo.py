"""ORPO: NLL on chosen + beta x odds-ratio loss, no reference model; the loop is shared."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from alignkit.configs import ORPOConfig
from alignkit.data.collate import ChosenRejected, PreferenceCollator
from alignkit.data.preference import PreferenceExample
from alignkit.engine.logprobs import LogProbModel
from alignkit.losses.orpo import orpo_loss
from alignkit.losses.preference import nll_loss, preference_metrics
from alignkit.models.loading import save_final_model
from alignkit.train.common import begin_training
from alignkit.train.loop import TrainingResult, TrainingTask, run_training


def orpo_compute_loss(model, batch: dict, training: bool, beta: float):
    """One step: NLL on chosen plus ``beta`` x the odds-ratio loss (no reference); returns (loss, metrics)."""
    out = model(batch)
    logps, tokens = ChosenRejected.split(out.logps), ChosenRejected.split(out.token_counts)
    chosen_mean, rejected_mean = logps.chosen / tokens.chosen, logps.rejected / tokens.rejected
    nll = nll_loss(logps.chosen, tokens.chosen)
    loss, ratio_losses, log_odds_diff = orpo_loss(chosen_mean, rejected_mean, nll, beta)
    # TRL's ORPO names: rewards are beta x mean token log-probs
    metrics = preference_metrics(
        beta * chosen_mean.detach(), beta * rejected_mean.detach(), logps.chosen, logps.rejected
    )
    metrics.update(
        {
            "nll_loss": nll.detach(),
            "log_odds_ratio": -ratio_losses.detach().mean(),
            "log_odds_chosen": log_odds_diff.detach().mean(),
        }
    )
    return loss, {"loss": loss.detach(), **metrics}


def train_orpo(
    config: ORPOConfig,
    train_examples: list[PreferenceExample] | None = None,
    eval_examples: list[PreferenceExample] | None = None,
    run_dir: Path | None = None,
    on_step=None,
) -> TrainingResult:
    """``alignkit orpo``: one-stage ORPO on pairs, no reference model. Data is validated before anything is
    written; pass examples to skip loading. ``on_step(global_step)`` is called after every optimizer step."""
    run = begin_training(config, "orpo", train_examples, eval_examples, run_dir)
    lm, tokenizer = run.lm, run.tokenizer
    task = TrainingTask(
        model=LogProbModel(lm, config.logprob_chunk_size),
        train_items=[{"pair": p} for p in run.train.items],
        eval_items=[{"pair": p} for p in run.eval.items] or None,
        collate=run.collator(PreferenceCollator, config),
        compute_loss=partial(orpo_compute_loss, beta=config.beta),
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
    )
    return run_training(config, task, run.run_dir)
