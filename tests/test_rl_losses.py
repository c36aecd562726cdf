"""RL losses against numbers worked out by hand."""

import math

import pytest
import torch

from alignkit.losses.rl import (
    AdaptiveKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    grpo_advantages,
    grpo_loss,
    kl_estimate,
    masked_var,
    rloo_advantages,
    token_rewards,
    whiten,
)

T = torch.tensor


def test_gae_full_length():
    # gamma 1, lam 0.5: deltas 0.1, 0.1, 0.3 -> A2 = 0.3, A1 = 0.1 + 0.5*0.3 = 0.25, A0 = 0.1 + 0.5*0.25 = 0.225
    adv, ret = gae(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), T([[True, True, True]]), gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.225, 0.25, 0.3])
    assert ret.tolist()[0] == pytest.approx([0.725, 0.85, 1.0])


def test_gae_ignores_padding_after_the_last_token():
    # gamma 0.9, lam 1; the padded value 9 must not leak: A1 = 2 - 1 = 1, A0 = 0.9*1 - 1 + 0.9*1 = 0.8
    adv, ret = gae(T([[0.0, 2.0, 0.0]]), T([[1.0, 1.0, 9.0]]), T([[True, True, False]]), gamma=0.9, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.8, 1.0, 0.0])
    assert ret.tolist()[0] == pytest.approx([1.8, 2.0, 0.0])


def test_whiten_uses_the_unbiased_variance_over_the_mask():
    x, mask = T([[1.0, 2.0, 3.0, 4.0, 100.0]]), T([[True, True, True, True, False]])
    std = math.sqrt(5 / 3)  # unbiased variance of 1..4 is 5/3
    assert whiten(x, mask).tolist()[0] == pytest.approx([-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std, 0.0], abs=1e-6)
    assert whiten(x, mask, shift_mean=False).tolist()[0][:4] == pytest.approx(
        [-1.5 / std + 2.5, -0.5 / std + 2.5, 0.5 / std + 2.5, 1.5 / std + 2.5], abs=1e-6
    )


def test_masked_var_of_two_entries_divides_by_one():
    assert masked_var(T([[1.0, 3.0, 50.0]]), T([[True, True, False]])).item() == pytest.approx(2.0)
    assert masked_var(T([[4.0, 50.0]]), T([[True, False]])).item() == 0.0  # one entry: no spread, not a division by 0


def test_kl_estimators():
    logps, ref = T([-1.0, -3.0]), T([-2.0, -2.0])
    assert kl_estimate(logps, ref, "k1").tolist() == pytest.approx([1.0, -1.0])
    # k3 = e^{-r} - 1 + r with r = log p - log q: r = 1 -> e^-1; r = -1 -> e - 2
    assert kl_estimate(logps, ref, "k3").tolist() == pytest.approx([math.exp(-1), math.e - 2])
    with pytest.raises(ValueError):
        kl_estimate(logps, ref, "k2")


def test_token_rewards_put_the_score_on_the_last_real_token():
    rewards = token_rewards(T([1.0]), T([[0.1, 0.2, 0.3]]), T([[True, True, False]]), kl_coef=0.5)
    assert rewards.tolist()[0] == pytest.approx([-0.05, 0.9, 0.0])
    # a one-token response (EOS at once) gets its score on token 0, not on the padding after it
    rewards = token_rewards(T([1.0, 2.0]), torch.zeros(2, 2), T([[True, False], [True, True]]), kl_coef=0.5)
    assert rewards.tolist() == [[1.0, 0.0], [0.0, 2.0]]


def test_clipped_policy_loss_both_signs():
    old = T([[math.log(0.5)]])  # ratio = 2
    loss, clipfrac, approx_kl = clipped_policy_loss(T([[0.0]]), old, T([[1.0]]), T([[True]]), 0.2)
    assert (
        loss.item() == pytest.approx(-1.2)
        and clipfrac.item() == 1.0
        and approx_kl.item() == pytest.approx(0.5 * math.log(2) ** 2)
    )
    loss, clipfrac, _ = clipped_policy_loss(T([[0.0]]), old, T([[-1.0]]), T([[True]]), 0.2)
    assert loss.item() == pytest.approx(2.0) and clipfrac.item() == 0.0  # a worse action is penalised unclipped
    # ratio 0.5, below 1 - 0.2: a worse action's gain is clipped at 0.8 (max(0.5, 0.8)); a better one's is not
    halved = T([[math.log(0.5)]])
    loss, clipfrac, approx_kl = clipped_policy_loss(halved, T([[0.0]]), T([[-1.0]]), T([[True]]), 0.2)
    assert (loss.item(), clipfrac.item()) == pytest.approx((0.8, 1.0))
    assert approx_kl.item() == pytest.approx(0.5 * math.log(0.5) ** 2)
    loss, clipfrac, _ = clipped_policy_loss(halved, T([[0.0]]), T([[1.0]]), T([[True]]), 0.2)
    assert (loss.item(), clipfrac.item()) == pytest.approx((-0.5, 0.0))  # max(-0.5, -0.8)
    # inside the range (ratio 1) nothing is clipped, though both terms are equal
    loss, clipfrac, _ = clipped_policy_loss(T([[-1.0]]), T([[-1.0]]), T([[1.5]]), T([[True]]), 0.2)
    assert (loss.item(), clipfrac.item()) == pytest.approx((-1.5, 0.0))


def test_clipped_value_loss():
    loss, clipfrac = clipped_value_loss(T([[1.0]]), T([[0.0]]), T([[0.5]]), T([[True]]), 0.2)
    assert loss.item() == pytest.approx(0.125) and clipfrac.item() == 0.0  # max(0.25, 0.09) / 2
    loss, clipfrac = clipped_value_loss(T([[1.0]]), T([[0.0]]), T([[2.0]]), T([[True]]), 0.2)
    assert (
        loss.item() == pytest.approx(0.5 * 1.8**2) and clipfrac.item() == 1.0
    )  # the clipped value (0.2) is further from 2
    # a value moved down from 0.5 to -0.5 is clipped to 0.5 - 0.2 = 0.3, further from -0.6:
    # max((-0.5 + 0.6)^2, (0.3 + 0.6)^2) / 2 = 0.81 / 2
    loss, clipfrac = clipped_value_loss(T([[-0.5]]), T([[0.5]]), T([[-0.6]]), T([[True]]), 0.2)
    assert (loss.item(), clipfrac.item()) == pytest.approx((0.405, 1.0))
    # inside the range nothing is clipped, though both terms are equal: (0.1 - 0.5)^2 / 2
    loss, clipfrac = clipped_value_loss(T([[0.1]]), T([[0.0]]), T([[0.5]]), T([[True]]), 0.2)
    assert (loss.item(), clipfrac.item()) == pytest.approx((0.08, 0.0))


def test_group_advantages():
    scores = T([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    # group 0: mean 0.25, unbiased std 0.5; group 1: all equal -> 0
    assert grpo_advantages(scores, 4).tolist() == pytest.approx(
        [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0, 0, 0, 0], abs=1e-6
    )
    assert grpo_advantages(scores, 4, scale=False).tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    assert rloo_advantages(scores, 4).tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        rloo_advantages(scores, 1)
    # two samples a prompt, the smallest group RLOO takes: each score minus the other one
    assert rloo_advantages(T([3.0, 1.0, 0.5, 2.0]), 2).tolist() == pytest.approx([2.0, -2.0, -1.5, 1.5])


def test_grpo_loss_clips_the_ratio_on_both_sides():
    # no KL term; ratio 2 with advantage 1: -min(2, 1.2) = -1.2; ratio 0.5 with advantage -1:
    # -min(-0.5, -0.8) = 0.8; each sequence's token mean, then the mean: (-1.2 + 0.8) / 2; both clipped
    logps = T([[0.0], [math.log(0.5)]])
    old = T([[math.log(0.5)], [0.0]])
    loss, clipfrac, _ = grpo_loss(logps, old, logps, T([1.0, -1.0]), T([[True], [True]]), 0.2, beta=0.0)
    assert (loss.item(), clipfrac.item()) == pytest.approx((-0.2, 1.0))


def test_gspo_takes_one_ratio_per_sequence_and_clip_higher_raises_the_upper_bound():
    """Log-ratios 0.2 and -0.1 (advantage 1): GSPO's ratio is exp(0.05) = 1.05127 for both tokens, token
    GRPO's exp(0.2) = 1.22140 and exp(-0.1) = 0.90484. Clip range [0.99, 1.03] (cliprange 0.01, high
    0.03): GSPO min(1.05127, 1.03) = 1.03; per token min(1.2214, 1.03) and min(0.90484, 0.99), mean
    0.96742. Advantage -1: GSPO -min(-1.05127, -1.03) = 1.05127, unclipped."""
    old = T([[-1.0, -1.0]])
    logps = old + T([[0.2, -0.1]])
    mask = T([[True, True]])

    def loss(advantage, level, high=None):
        return grpo_loss(logps, old, logps, T([advantage]), mask, 0.01, 0.0, "grpo", None, level, high)

    assert loss(1.0, "sequence", 0.1)[0].item() == pytest.approx(-math.exp(0.05))  # inside [0.99, 1.1]
    seq, clipfrac, _ = loss(1.0, "sequence", 0.03)
    assert (seq.item(), clipfrac.item()) == pytest.approx((-1.03, 1.0))
    assert loss(1.0, "token", 0.03)[0].item() == pytest.approx(-(1.03 + math.exp(-0.1)) / 2)
    assert loss(1.0, "token")[0].item() == pytest.approx(-(1.01 + math.exp(-0.1)) / 2)  # high = cliprange
    assert loss(-1.0, "sequence", 0.03)[0].item() == pytest.approx(math.exp(0.05))
    # a padded token does not enter the sequence's mean log-ratio
    padded = grpo_loss(
        T([[-0.8, -1.1, 5.0]]),
        T([[-1.0, -1.0, 0.0]]),
        T([[0.0] * 3]),
        T([1.0]),
        T([[True, True, False]]),
        0.2,
        0.0,
        "grpo",
        None,
        "sequence",
    )[0]
    assert padded.item() == pytest.approx(-math.exp(0.05))
    # RLOO's and PPO's surrogate takes the same upper bound
    assert clipped_policy_loss(logps, old, T([[1.0, 1.0]]), mask, 0.01, 0.03)[0].item() == pytest.approx(
        -(1.03 + math.exp(-0.1)) / 2
    )


def test_grpo_loss_with_kl_term():
    logps = T([[-1.0, -1.0]])
    loss, clipfrac, kl = grpo_loss(logps, logps, T([[-2.0, -2.0]]), T([2.0]), T([[True, True]]), 0.2, beta=0.1)
    assert (
        loss.item() == pytest.approx(-2.0 + 0.1 * math.exp(-1))
        and clipfrac.item() == 0.0
        and kl.item() == pytest.approx(math.exp(-1))
    )
    # sequence mean first: a long and a short sequence count equally
    loss, _, _ = grpo_loss(
        T([[0.0, 0.0], [0.0, 0.0]]),
        T([[0.0, 0.0], [0.0, 0.0]]),
        T([[0.0, 0.0], [0.0, 0.0]]),
        T([1.0, -3.0]),
        T([[True, True], [True, False]]),
        0.2,
        beta=0.0,
    )
    assert loss.item() == pytest.approx((-1.0 + 3.0) / 2)


def test_grpo_loss_refuses_unknown_settings():
    args = T([[0.0]]), T([[0.0]]), T([[0.0]]), T([1.0]), T([[True]]), 0.2, 0.0
    with pytest.raises(ValueError, match="needs max_tokens"):
        grpo_loss(*args, "dr_grpo")
    with pytest.raises(ValueError, match="unknown GRPO loss_type 'ppo'"):
        grpo_loss(*args, "ppo")
    with pytest.raises(ValueError, match="unknown importance_sampling_level 'tokens'"):
        grpo_loss(*args, "grpo", None, "tokens")


def test_adaptive_kl_controller():
    controller = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert controller.update(12.0, 100) == pytest.approx(0.2 * (1 + 0.2 * 100 / 10000))  # error clipped to +0.2
    assert controller.update(3.0, 100) == pytest.approx(0.2 * 1.002 * (1 - 0.2 * 100 / 10000))  # 3/6 - 1 = -0.5 -> -0.2
    assert controller.update(6.6, 1000) == pytest.approx(0.2 * 1.002 * 0.998 * (1 + 0.1 * 0.1))
