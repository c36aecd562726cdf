"""RL pieces as pure functions of tensors: KL estimators, GAE, whitening, clipped policy and value
losses, group-relative advantages (GRPO, RLOO) and the adaptive KL controller.

Shapes: token-level tensors are ``[N, T]`` (N sequences, T response tokens, right-padded) with a
boolean ``mask`` of the real tokens; sequence-level tensors are ``[N]``.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The mean of ``x`` over the positions where ``mask`` is set (over ``dim`` when given)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the masked entries."""
    mean = masked_mean(x, mask)
    n = mask.sum().clamp(min=2)
    return (((x - mean) ** 2) * mask).sum() / (n - 1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked entries (the mean is added back when ``shift_mean`` is false); 0 off the mask."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled from the policy (Schulman, "Approximating KL").

    k1 = log p - log q (unbiased, can be negative); k3 = (q/p) - 1 - log(q/p) (unbiased, never negative).
    """
    log_ratio = logps - ref_logps
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """PPO's per-token reward: -kl_coef x KL at every token, plus the sequence score at its last token."""
    rewards = -kl_coef * kl * mask
    last = mask.long().sum(1) - 1
    rewards[torch.arange(len(scores)), last.clamp(min=0)] += scores
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses; the value after the last token is 0.

    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lam A_{t+1};  returns = A + V.
    """
    n, t = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    maskf = mask.to(rewards.dtype)
    for i in reversed(range(t)):
        next_value = values[:, i + 1] * maskf[:, i + 1] if i + 1 < t else torch.zeros_like(running)
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        running = (delta + gamma * lam * running) * maskf[:, i]
        advantages[:, i] = running
    return advantages, (advantages + values) * maskf


def clipped_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_high: float | None = None,
):
    """PPO's clipped surrogate, averaged over tokens; the ratio is clipped to [1 - cliprange,
    1 + cliprange_high] (``cliprange`` both ways when None). Returns (loss, clip fraction, approx KL
    old->new)."""
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    high = cliprange if cliprange_high is None else cliprange_high
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + high)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
):
    """0.5 x max((V - R)^2, (V_clipped - R)^2) averaged over tokens; returns (loss, clip fraction)."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped, loss_clipped = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(loss_unclipped, loss_clipped), mask)
    return loss, masked_mean((loss_clipped > loss_unclipped).float(), mask).detach()


def grpo_advantages(scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages: each score minus its group's mean, divided by the group's std
    (when ``scale``). Scores are ordered group by group: ``[g0s0, g0s1, ..., g1s0, ...]``."""
    groups = scores.view(-1, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale:
        centred = centred / (groups.std(1, keepdim=True) + eps)
    return centred.reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out baseline: each score minus the mean of the other k - 1 scores of its group."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    groups = scores.view(-1, group_size)
    baseline = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).reshape(-1)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    beta: float,
    loss_type: str = "grpo",
    max_tokens: int | None = None,
    importance_sampling_level: str = "token",
    cliprange_high: float | None = None,
):
    """GRPO: the clipped surrogate with a sequence-level advantage, plus beta x k3 KL to the reference,
    summed over tokens and normalised as ``loss_type`` says (TRL's names). The ratio is clipped to
    [1 - cliprange, 1 + cliprange_high] (DAPO's clip-higher; ``cliprange`` both ways when None); it is
    each token's (``importance_sampling_level`` token) or, for GSPO (sequence), exp of the sequence's mean
    log-ratio, one per sequence.

    - ``grpo``: each sequence's mean over its tokens, then the mean over sequences;
    - ``bnpo`` / ``dapo``: the sum over every token of the minibatch over its number of tokens (long
      completions weigh more; one minibatch is one update here, so ``dapo``'s "tokens of the global
      batch" are the minibatch's on one process, and processes' means are averaged);
    - ``dr_grpo``: the sum over sequences x ``max_tokens`` (the generation limit), a constant.

    Returns (loss, clip fraction, mean KL)."""
    log_ratio = logps - old_logps
    if importance_sampling_level == "sequence":  # GSPO: one length-normalised ratio per sequence
        log_ratio = masked_mean(log_ratio, mask, dim=1).unsqueeze(1).expand_as(logps)
    elif importance_sampling_level != "token":
        raise ValueError(f"unknown importance_sampling_level '{importance_sampling_level}' (token, sequence)")
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(1)
    high = cliprange if cliprange_high is None else cliprange_high
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1.0 - cliprange, 1.0 + high) * adv)
    kl = kl_estimate(logps, ref_logps, "k3")
    if beta:
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = masked_mean(per_token, mask, dim=1).mean()
    elif loss_type in ("bnpo", "dapo"):
        loss = masked_mean(per_token, mask)
    elif loss_type == "dr_grpo":
        if not max_tokens:
            raise ValueError("loss_type dr_grpo needs max_tokens (the generation limit)")
        loss = (per_token * mask.to(per_token.dtype)).sum() / (per_token.shape[0] * max_tokens)
    else:
        raise ValueError(f"unknown GRPO loss_type '{loss_type}' (grpo, bnpo, dapo, dr_grpo)")
    clipfrac = masked_mean(((ratio < 1.0 - cliprange) | (ratio > 1.0 + high)).float(), mask)
    return loss, clipfrac.detach(), masked_mean(kl, mask).detach()


class AdaptiveKLController:
    """Ziegler et al. (2019): move kl_coef so the observed KL tracks ``target``.

    error = clip(KL / target - 1, -0.2, 0.2);  kl_coef *= 1 + error x n_steps / horizon.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move the KL coefficient toward the target KL (proportional, clipped); returns the new value."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
