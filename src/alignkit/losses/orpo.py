"""ORPO (Hong et al. 2024): SFT on chosen plus an odds-ratio penalty, with no reference model."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) for p = exp(mean token log-prob), computed stably."""
    return mean_logps - torch.log1p(-torch.exp(mean_logps.clamp(max=-1e-6)))


def orpo_loss(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, nll: torch.Tensor, lam: float):
    """``nll + lam * mean(-log sigmoid(log_odds(chosen) - log_odds(rejected)))``.

    Returns (total loss, odds-ratio losses [batch], log-odds difference [batch]).
    """
    log_odds_diff = log_odds(chosen_mean_logps) - log_odds(rejected_mean_logps)
    ratio_losses = -F.logsigmoid(log_odds_diff)
    return nll + lam * ratio_losses.mean(), ratio_losses, log_odds_diff
