"""KTO (Ethayarajh et al. 2024): prospect-theoretic loss on unpaired desirable/undesirable completions."""

from __future__ import annotations

import torch


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example losses and (detached) rewards.

    r = log pi(y|x) - log ref(y|x);  z0 = max(0, kl) (the reference point, no gradient)
    desirable:   w_d * (1 - sigmoid(beta * (r - z0)))
    undesirable: w_u * (1 - sigmoid(beta * (z0 - r)))
    Rewards are ``beta * r``.
    """
    ratio = policy_logps - ref_logps
    z0 = kl.detach().clamp(min=0)
    desirable = desirable.bool()
    losses = torch.where(
        desirable,
        desirable_weight * (1.0 - torch.sigmoid(beta * (ratio - z0))),
        undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - ratio))),
    )
    return losses, beta * ratio.detach()


def kto_kl_estimate(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """The batch's KL reference point: mean log-ratio on mismatched (prompt, completion) pairs, >= 0."""
    return (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def kto_metrics(
    rewards: torch.Tensor, policy_logps: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor
) -> dict[str, torch.Tensor]:
    """TRL's KTO names. Sums and counts per class so means stay exact when batches are averaged."""
    desirable = desirable.bool()
    undesirable = ~desirable
    return {
        "kl": kl,
        "rewards/chosen_sum": rewards[desirable].sum(),
        "rewards/rejected_sum": rewards[undesirable].sum(),
        "logps/chosen_sum": policy_logps.detach()[desirable].sum(),
        "logps/rejected_sum": policy_logps.detach()[undesirable].sum(),
        "count/chosen": desirable.sum().float(),
        "count/rejected": undesirable.sum().float(),
    }
