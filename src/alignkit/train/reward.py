"""Bradley-Terry reward model: scores at each sequence's last token; the loop is shared.

The saved model (LoRA merged in) is a plain ``AutoModelForSequenceClassification`` with one output;
it scores ``alignkit.data.tokenize.reward_text(tokenizer, prompt, response)``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from alignkit.configs import RewardConfig
from alignkit.data.collate import ChosenRejected, PreferenceCollator
from alignkit.data.preference import PreferenceExample
from alignkit.engine.scores import ScoreModel
from alignkit.losses.reward import bradley_terry_loss, reward_metrics
from alignkit.models.loading import save_final_model
from alignkit.train.common import begin_training
from alignkit.train.loop import TrainingResult, TrainingTask, run_training


class RewardCollator(PreferenceCollator):
    """Chosen then rejected sequences, plus the per-pair ``margin`` when the data has one."""

    def __call__(self, items: list[dict]) -> dict:
        """The pair batch of ``items`` plus each pair's ``margin`` when the data has margins."""
        batch = super().__call__(items)
        if any(item.get("margin") is not None for item in items):
            batch["margin"] = torch.tensor([item.get("margin") or 0.0 for item in items], dtype=torch.float32)
        return batch


def reward_compute_loss(model, batch: dict, training: bool, center_rewards_coefficient: float | None):
    """One step: the Bradley-Terry loss of chosen over rejected scores (minus a pair's margin when given), plus
    the optional centring term; returns (loss, metrics)."""
    chosen, rejected = ChosenRejected.split(model(batch))
    loss = bradley_terry_loss(chosen, rejected, batch.get("margin")).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
    return loss, {"loss": loss.detach(), **reward_metrics(chosen, rejected)}


def save_reward_model(lm, tokenizer, path: Path) -> None:
    """LoRA adapters are merged so the folder loads with plain transformers."""
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    save_final_model(lm, tokenizer, path)


def train_reward(
    config: RewardConfig,
    train_examples: list[PreferenceExample] | None = None,
    eval_examples: list[PreferenceExample] | None = None,
    run_dir: Path | None = None,
    on_step=None,
) -> TrainingResult:
    """``alignkit reward``: a Bradley-Terry reward model on pairs. Data is validated before anything is
    written; pass examples to skip loading. ``on_step(global_step)`` is called after every optimizer step."""
    run = begin_training(config, "reward", train_examples, eval_examples, run_dir, reward_head=True)
    lm, tokenizer = run.lm, run.tokenizer

    def items(rows, examples):
        return [{"pair": p, "margin": e.margin} for p, e in zip(rows.items, examples)]

    task = TrainingTask(
        model=ScoreModel(lm),
        train_items=items(run.train, run.train_examples),
        eval_items=items(run.eval, run.eval_examples) or None,
        collate=run.collator(RewardCollator, config),
        compute_loss=partial(reward_compute_loss, center_rewards_coefficient=config.center_rewards_coefficient),
        save_final=partial(save_reward_model, lm, tokenizer),
        on_step=on_step,
    )
    return run_training(config, task, run.run_dir)
