"""ORPO: NLL on chosen + beta x odds-ratio loss, no reference model; the loop is shared."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from alignkit.data.collate import PreferenceCollator
from alignkit.data.preference import PreferenceExample, load_preference_data
from alignkit.data.tokenize import tokenize_pairs
from alignkit.engine.logprobs import LogProbModel
from alignkit.losses.orpo import orpo_loss
from alignkit.losses.preference import nll_loss, preference_metrics
from alignkit.method_configs import ORPOConfig
from alignkit.models.loading import save_final_model
from alignkit.train.common import begin_training
from alignkit.train.loop import TrainingResult, TrainingTask, run_training


def orpo_compute_loss(model, batch: dict, training: bool, beta: float):
    result = model(batch)
    logps, counts = result.logps, result.token_counts
    half = logps.shape[0] // 2
    chosen_mean, rejected_mean = logps[:half] / counts[:half], logps[half:] / counts[half:]
    nll = nll_loss(logps[:half], counts[:half])
    loss, ratio_losses, log_odds_diff = orpo_loss(chosen_mean, rejected_mean, nll, beta)
    # TRL's ORPO names: rewards are beta x mean token log-probs
    metrics = preference_metrics(beta * chosen_mean.detach(), beta * rejected_mean.detach(), logps[:half], logps[half:])
    metrics.update({"nll_loss": nll.detach(), "log_odds_ratio": -ratio_losses.detach().mean(), "log_odds_chosen": log_odds_diff.detach().mean()})
    return loss, {"loss": loss.detach(), **metrics}


def train_orpo(config: ORPOConfig, train_examples: list[PreferenceExample] | None = None, eval_examples: list[PreferenceExample] | None = None,
               run_dir: Path | None = None, on_step=None) -> TrainingResult:
    train_examples, eval_examples, run_dir, lm, tokenizer = begin_training(config, load_preference_data, train_examples, eval_examples, run_dir)
    tokenize = partial(tokenize_pairs, tokenizer=tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length, apply_chat_template=config.apply_chat_template)
    task = TrainingTask(
        model=LogProbModel(lm, config.logprob_chunk_size),
        train_items=[{"pair": p} for p in tokenize(train_examples)],
        eval_items=[{"pair": p} for p in tokenize(eval_examples or [])] or None,
        collate=PreferenceCollator(tokenizer.pad_token_id, config.padding_free, config.padding_side, config.prefix_sharing),
        compute_loss=partial(orpo_compute_loss, beta=config.beta),
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
    )
    return run_training(config, task, run_dir)
