"""GRPO and RLOO: k completions per prompt, group-relative advantages, no value model.

GRPO: advantage = (score - group mean) / group std; the k3 KL to the reference is a loss term.
RLOO: advantage = (score - KL penalty) minus the mean of the other k - 1 in the group.
"""

from __future__ import annotations

from alignkit.configs import GRPOConfig, RLOOConfig
from alignkit.losses.rl import (
    clipped_policy_loss,
    grpo_advantages,
    grpo_loss,
    kl_estimate,
    rloo_advantages,
)
from alignkit.train.loop import TrainingResult
from alignkit.train.rl_common import train_rl
from alignkit.train.rl_loop import RLMethod


class GRPO(RLMethod):
    """GRPO: group-normalised advantages over each prompt's completions, KL to the reference in the loss."""

    name = "grpo"

    def prepare(self, config: GRPOConfig, rollouts, old, ref_logps, kl_coef):
        """Advantages of a rollout batch; returns (tensors for the loss, stats)."""
        advantages = grpo_advantages(rollouts.scores, config.num_generations, config.scale_rewards).to(old.logps.device)
        return {"old_logps": old.logps, "ref_logps": ref_logps, "advantages": advantages, "mask": old.mask}, {
            "advantages/abs_mean": advantages.abs().mean()
        }

    def loss(self, config: GRPOConfig, out, p: dict):
        """The clipped surrogate plus beta x KL to the reference on a minibatch; returns (loss, stats)."""
        loss, clipfrac, kl = grpo_loss(
            out.logps,
            p["old_logps"],
            p["ref_logps"],
            p["advantages"],
            out.mask & p["mask"],
            config.cliprange,
            config.beta,
            config.loss_type,
            config.max_new_tokens,
            config.importance_sampling_level,
            config.cliprange_high,
        )
        return loss, {"policy/clipfrac": clipfrac, "policy/k3_kl": kl}


class RLOO(RLMethod):
    """RLOO: leave-one-out baseline over each prompt's completions, KL penalty in the reward."""

    name = "rloo"

    def prepare(self, config: RLOOConfig, rollouts, old, ref_logps, kl_coef):
        """KL-penalised rewards and leave-one-out advantages of a rollout batch; returns (tensors, stats)."""
        seq_kl = (kl_estimate(old.logps, ref_logps, config.kl_estimator) * old.mask).sum(1)
        rewards = rollouts.scores.to(seq_kl.device) - kl_coef * seq_kl
        advantages = rloo_advantages(rewards, config.num_generations)
        token_advantages = advantages.unsqueeze(1).expand_as(old.logps).contiguous()
        return {"old_logps": old.logps, "advantages": token_advantages, "mask": old.mask}, {
            "rewards/with_kl_penalty": rewards.mean()
        }

    def loss(self, config: RLOOConfig, out, p: dict):
        """The clipped surrogate on a minibatch; returns (loss, stats)."""
        loss, clipfrac, approx_kl = clipped_policy_loss(
            out.logps, p["old_logps"], p["advantages"], out.mask & p["mask"], config.cliprange, config.cliprange_high
        )
        return loss, {"policy/clipfrac": clipfrac, "policy/approx_kl": approx_kl}


def train_grpo(config: GRPOConfig) -> TrainingResult:
    """``alignkit grpo``: GRPO on prompt rows with the config's reward terms."""
    return train_rl(config, GRPO())


def train_rloo(config: RLOOConfig) -> TrainingResult:
    """``alignkit rloo``: RLOO on prompt rows with the config's reward terms."""
    return train_rl(config, RLOO())
