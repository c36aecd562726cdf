"""Pairwise preference losses (the DPO family) over response log-probs.

All inputs are ``[batch]`` fp32 tensors of log-probs summed over response tokens (token counts
where a loss normalises by length); all return ``(losses [batch], chosen_rewards [batch],
rejected_rewards [batch])`` with rewards detached. ``preference_loss`` dispatches on ``loss_type``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.data.collate import ChosenRejected


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


def robust_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, label_smoothing: float):
    """Robust DPO (Chowdhury et al. 2024): an unbiased loss when a fraction eps of labels is flipped.

    loss = ((1 - eps) * -log sigmoid(beta h) - eps * -log sigmoid(-beta h)) / (1 - 2 eps)
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    clean = -(1.0 - label_smoothing) * F.logsigmoid(beta * h)
    flipped = -label_smoothing * F.logsigmoid(-beta * h)
    losses = (clean - flipped) / (1.0 - 2.0 * label_smoothing)
    return losses, beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach()


def hinge_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """SLiC-HF hinge on the log-ratio difference: max(0, 1 - beta * h)."""
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = torch.relu(1.0 - beta * h)
    return losses, beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach()


def ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens, beta: float):
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2 beta))^2, with h built from per-token average log-ratios
    (as the IPO authors and TRL do), so beta means the same whatever the response length."""
    chosen_ratio = (policy_chosen - ref_chosen) / chosen_tokens.clamp(min=1)
    rejected_ratio = (policy_rejected - ref_rejected) / rejected_tokens.clamp(min=1)
    losses = (chosen_ratio - rejected_ratio - 1.0 / (2.0 * beta)) ** 2
    return losses, beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach()


def simpo_loss(policy_chosen, policy_rejected, chosen_tokens, rejected_tokens, beta: float, gamma: float):
    """SimPO (Meng et al. 2024), reference-free: -log sigmoid(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma).

    Rewards are the length-normalised ``beta * mean token log-prob``.
    """
    chosen_rewards = beta * policy_chosen / chosen_tokens.clamp(min=1)
    rejected_rewards = beta * policy_rejected / rejected_tokens.clamp(min=1)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo", "simpo")
REFERENCE_FREE = ("simpo",)


def preference_loss(
    loss_type: str,
    policy: ChosenRejected,
    reference: ChosenRejected | None,
    tokens: ChosenRejected,
    beta: float,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
):
    """The loss named ``loss_type`` on sequence log-probs of the policy and the reference (None for the
    reference-free SimPO), with each side's response token counts; returns (per-pair losses, chosen
    rewards, rejected rewards)."""
    if loss_type == "simpo":
        return simpo_loss(policy.chosen, policy.rejected, tokens.chosen, tokens.rejected, beta, simpo_gamma)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    if reference is None:
        raise ValueError(f"loss_type {loss_type!r} compares the policy with a reference: pass its log-probs")
    args = (policy.chosen, policy.rejected, reference.chosen, reference.rejected)
    if loss_type == "sigmoid":
        return dpo_loss(*args, beta, label_smoothing)
    if loss_type == "robust":
        return robust_dpo_loss(*args, beta, label_smoothing)
    if loss_type == "hinge":
        return hinge_loss(*args, beta)
    return ipo_loss(*args, tokens.chosen, tokens.rejected, beta)


def nll_loss(logps: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """Token-level mean negative log-likelihood over a batch of sequences (SFT, RPO, ORPO)."""
    return -logps.sum() / token_counts.sum().clamp(min=1)


def preference_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """TRL's metric names, each a batch mean."""
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": policy_chosen.detach().mean(),
        "logps/rejected": policy_rejected.detach().mean(),
    }
