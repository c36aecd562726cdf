"""Pairwise preference losses over summed response log-probs.

All inputs are ``[batch]`` fp32 tensors of log-probs summed over response tokens; all return
``(losses [batch], chosen_rewards [batch], rejected_rewards [batch])`` with rewards detached.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023), with conservative label smoothing (cDPO) when ``label_smoothing`` > 0.

    h = (log pi(y_w) - log pi(y_l)) - (log ref(y_w) - log ref(y_l))
    loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def preference_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's metric names, each a batch mean."""
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": policy_chosen.detach().mean(),
        "logps/rejected": policy_rejected.detach().mean(),
    }
