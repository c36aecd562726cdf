"""PPO-RLHF: per-token KL penalty in the reward, the score at the last token, GAE over a value
head on the policy's own backbone, clipped policy and value losses; optional adaptive KL."""

from __future__ import annotations

from alignkit.configs import PPOConfig
from alignkit.losses.rl import (
    AdaptiveKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_estimate,
    masked_mean,
    token_rewards,
    whiten,
)
from alignkit.train.loop import TrainingResult
from alignkit.train.rl_common import train_rl
from alignkit.train.rl_loop import RLMethod


class PPO(RLMethod):
    """PPO-RLHF: per-token KL penalty in the reward, GAE over a value head, clipped policy and value losses."""

    name = "ppo"
    uses_value_head = True

    def start(self, config: PPOConfig, kl_coef: float | None = None) -> None:
        """Set the KL coefficient (a resumed run's) and the adaptive controller when asked for."""
        super().start(config, kl_coef)
        self.controller = (
            AdaptiveKLController(self.kl_coef, config.target_kl, config.kl_horizon) if config.adaptive_kl else None
        )

    def prepare(self, config: PPOConfig, rollouts, old, ref_logps, kl_coef):
        """Per-token rewards, GAE advantages and returns of a rollout batch; returns (tensors, stats)."""
        mask = old.mask
        kl = kl_estimate(old.logps, ref_logps, config.kl_estimator) * mask
        rewards = token_rewards(rollouts.scores.to(kl.device), kl, mask, kl_coef)
        advantages, returns = gae(rewards, old.values, mask, config.gamma, config.lam)
        stats = {
            "returns/mean": masked_mean(returns, mask),
            "advantages/mean": masked_mean(advantages, mask),
            "advantages/std": masked_mean(advantages**2, mask)
            .sub(masked_mean(advantages, mask) ** 2)
            .clamp(min=0)
            .sqrt(),
            "values/mean": masked_mean(old.values, mask),
        }
        if config.whiten_advantages:
            advantages = whiten(advantages, mask)
        return {
            "old_logps": old.logps,
            "old_values": old.values,
            "advantages": advantages,
            "returns": returns,
            "mask": mask,
        }, stats

    def loss(self, config: PPOConfig, out, p: dict):
        """The clipped policy loss plus vf_coef x the clipped value loss on a minibatch; returns (loss, stats)."""
        mask = out.mask & p["mask"]
        pg_loss, pg_clipfrac, approx_kl = clipped_policy_loss(
            out.logps, p["old_logps"], p["advantages"], mask, config.cliprange, config.cliprange_high
        )
        vf_loss, vf_clipfrac = clipped_value_loss(
            out.values, p["old_values"], p["returns"], mask, config.cliprange_value
        )
        loss = pg_loss + config.vf_coef * vf_loss
        return loss, {
            "loss/policy": pg_loss.detach(),
            "loss/value": vf_loss.detach(),
            "policy/clipfrac": pg_clipfrac,
            "value/clipfrac": vf_clipfrac,
            "policy/approx_kl": approx_kl,
        }

    def after_step(self, mean_kl: float, n_sequences: int) -> None:
        """Update the adaptive KL coefficient from this step's KL."""
        if self.controller is not None:
            self.kl_coef = self.controller.update(mean_kl, n_sequences)


def train_ppo(config: PPOConfig) -> TrainingResult:
    """PPO against the configured rewards; see :mod:`alignkit.train.rl_loop`."""
    return train_rl(config, PPO())
