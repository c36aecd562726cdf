"""SFT: token-mean NLL on assistant tokens; the loop is shared. Stage 1 of the pipeline: point a
DPO/reward/KTO run's ``model`` at this run's ``final/`` folder."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from alignkit.configs import SFTConfig
from alignkit.data.sft import (
    SFTCollator,
    SFTExample,
    pack_examples,
)
from alignkit.engine.logprobs import LogProbModel
from alignkit.losses.preference import nll_loss
from alignkit.models.loading import save_final_model
from alignkit.train.common import begin_training
from alignkit.train.loop import TrainingResult, TrainingTask, run_training


def sft_compute_loss(model, batch: dict, training: bool):
    """One step: the token-mean NLL of the assistant tokens; returns (loss, metrics)."""
    result = model(batch)
    loss = nll_loss(result.logps, result.token_counts)
    return loss, {"loss": loss.detach(), "scored_tokens": result.token_counts.sum().float()}


def train_sft(
    config: SFTConfig,
    train_examples: list[SFTExample] | None = None,
    eval_examples: list[SFTExample] | None = None,
    run_dir: Path | None = None,
    on_step=None,
) -> TrainingResult:
    """``alignkit sft``: supervised fine-tuning (loss on assistant tokens only). Data is validated before
    anything is written; pass examples to skip loading. ``on_step(global_step)`` is called after every
    optimizer step."""
    run = begin_training(config, "sft", train_examples, eval_examples, run_dir)
    lm, tokenizer = run.lm, run.tokenizer
    train_items, eval_items = run.train.items, run.eval.items
    if run.train.dropped:
        print(
            f"alignkit sft: {run.train.dropped} training example(s) had no assistant token "
            f"within max_length={config.max_length} and were skipped"
        )
    if config.packing:
        train_items = pack_examples(train_items, config.max_length)
    task = TrainingTask(
        model=LogProbModel(lm, config.logprob_chunk_size),
        train_items=train_items,
        eval_items=eval_items or None,
        collate=run.collator(SFTCollator, config),
        compute_loss=sft_compute_loss,
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
    )
    return run_training(config, task, run.run_dir)
