"""Bradley-Terry reward-model loss over scalar scores of chosen and rejected responses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pair ``-log sigmoid(r_w - r_l - margin)`` (margin: how much better chosen is, Llama-2 style)."""
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


def reward_metrics(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reward-model metrics of a batch: pairwise accuracy, mean margin, mean chosen and rejected scores."""
    chosen, rejected = chosen_scores.detach(), rejected_scores.detach()
    return {
        "accuracy": (chosen > rejected).float().mean(),
        "margin": (chosen - rejected).mean(),
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
    }
