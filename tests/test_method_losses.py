"""IPO, robust DPO, hinge, SimPO, RPO NLL, KTO, ORPO and Bradley-Terry against numbers worked out by
hand from the papers' formulas (the arithmetic is in each comment)."""

import math

import pytest
import torch

from alignkit.data.collate import ChosenRejected as CR
from alignkit.losses.kto import kto_kl_estimate, kto_loss, kto_metrics
from alignkit.losses.orpo import log_odds, orpo_loss
from alignkit.losses.preference import (
    hinge_loss,
    ipo_loss,
    nll_loss,
    preference_loss,
    robust_dpo_loss,
    simpo_loss,
)
from alignkit.losses.reward import bradley_terry_loss, reward_metrics
from alignkit.train.kto import kto_finalize_metrics


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_robust_dpo_hand_computed_and_reduces_to_dpo():
    # h = 1, beta = 0.1, eps = 0.2: (0.8 * log(1 + e^-0.1) - 0.2 * log(1 + e^0.1)) / 0.6
    #   = (0.8 * 0.64439666 - 0.2 * 0.74439666) / 0.6 = 0.61106333
    losses, chosen, _ = robust_dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.1, label_smoothing=0.2)
    assert losses.item() == pytest.approx(0.6110633267402376, abs=1e-6)
    assert chosen.item() == pytest.approx(0.05, abs=1e-7)
    # references that differ, h != 1: h = (-1 - -3.5) - (-1.5 - -2) = 2, beta = 0.2 -> beta h = 0.4, eps = 0.1:
    # (0.9 * log(1 + e^-0.4) - 0.1 * log(1 + e^0.4)) / 0.8 = (0.9 * 0.51301525 - 0.1 * 0.91301525) / 0.8 = 0.46301525
    # rewards: 0.2 * (-1 - -1.5) = 0.1 and 0.2 * (-3.5 - -2) = -0.3
    losses, chosen, rejected = robust_dpo_loss(t(-1.0), t(-3.5), t(-1.5), t(-2.0), beta=0.2, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.46301525239995256, abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.1, -0.3), abs=1e-7)
    # eps = 0 is plain DPO: log(1 + e^-0.1)
    assert robust_dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), 0.1, 0.0)[0].item() == pytest.approx(
        0.6443966600735709, abs=1e-6
    )
    with pytest.raises(ValueError):
        robust_dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), 0.1, 0.5)


def test_hinge_loss():
    # h = 1, beta = 0.1: max(0, 1 - 0.1) = 0.9; h = 20: max(0, 1 - 2) = 0
    losses, _, _ = hinge_loss(t(-1.0, 0.0), t(-2.0, -20.0), t(-1.5, 0.0), t(-1.5, 0.0), beta=0.1)
    assert losses.tolist() == pytest.approx([0.9, 0.0], abs=1e-6)
    # references that differ: h = (-1 - -3.5) - (-1.5 - -2) = 2, beta = 0.2: max(0, 1 - 0.4) = 0.6;
    # rewards 0.2 * (-1 - -1.5) = 0.1 and 0.2 * (-3.5 - -2) = -0.3
    losses, chosen, rejected = hinge_loss(t(-1.0), t(-3.5), t(-1.5), t(-2.0), beta=0.2)
    assert (losses.item(), chosen.item(), rejected.item()) == pytest.approx((0.6, 0.1, -0.3), abs=1e-6)


def test_ipo_uses_length_averaged_log_ratios():
    # chosen: (-4 - -6) / 4 tokens = 0.5; rejected: (-9 - -6) / 3 tokens = -1; h = 1.5
    # beta = 0.5 -> target 1 / (2 * 0.5) = 1; loss = (1.5 - 1)^2 = 0.25
    losses, _, _ = ipo_loss(t(-4.0), t(-9.0), t(-6.0), t(-6.0), t(4.0), t(3.0), beta=0.5)
    assert losses.item() == pytest.approx(0.25, abs=1e-6)
    # exactly at the target margin the loss is 0; equal log-probs give (1/(2 beta))^2 = 1
    # (chosen ratio (-4 - -4)/4 = 0, rejected -1: h = 1 = the target)
    assert ipo_loss(t(-4.0), t(-9.0), t(-4.0), t(-6.0), t(4.0), t(3.0), 0.5)[0].item() == pytest.approx(0.0, abs=1e-9)
    assert ipo_loss(t(-3.0), t(-3.0), t(-3.0), t(-3.0), t(2.0), t(2.0), 0.5)[0].item() == pytest.approx(1.0, abs=1e-6)
    # beta = 0.25 (target 1 / 0.5 = 2, where 2 beta would be 0.5) and one-token answers:
    # chosen (-4 - -6) / 1 = 2, rejected (-9 - -6) / 1 = -3, h = 5 -> (5 - 2)^2 = 9;
    # rewards 0.25 * 2 = 0.5 and 0.25 * -3 = -0.75 (summed, not averaged)
    losses, chosen, rejected = ipo_loss(t(-4.0), t(-9.0), t(-6.0), t(-6.0), t(1.0), t(1.0), beta=0.25)
    assert (losses.item(), chosen.item(), rejected.item()) == pytest.approx((9.0, 0.5, -0.75), abs=1e-6)


def test_simpo_is_reference_free_and_length_normalised():
    # beta = 2: chosen reward 2 * -4/4 = -2, rejected 2 * -9/3 = -6; gamma 0.5 -> -log sigmoid(4 - 0.5) = 0.02975042
    losses, chosen, rejected = simpo_loss(t(-4.0), t(-9.0), t(4.0), t(3.0), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(0.029750418272620607, abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((-2.0, -6.0))
    # doubling a response's length at the same per-token log-prob changes nothing
    assert simpo_loss(t(-8.0), t(-9.0), t(8.0), t(3.0), 2.0, 0.5)[0].item() == pytest.approx(losses.item(), abs=1e-6)
    # the reference arguments of the dispatcher are ignored
    via = preference_loss(
        "simpo", CR(t(-4.0), t(-9.0)), CR(t(100.0), t(-100.0)), CR(t(4.0), t(3.0)), 2.0, simpo_gamma=0.5
    )[0]
    assert via.item() == pytest.approx(losses.item(), abs=1e-6)


def test_preference_loss_dispatch_and_unknown_type():
    dpo = preference_loss("sigmoid", CR(t(-1.0), t(-2.0)), CR(t(-1.5), t(-1.5)), CR(t(1.0), t(1.0)), 0.1)[0]
    assert dpo.item() == pytest.approx(0.6443966600735709, abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss_type"):
        preference_loss("dpo2", CR(t(-1.0), t(-2.0)), CR(t(-1.5), t(-1.5)), CR(t(1.0), t(1.0)), 0.1)
    with pytest.raises(ValueError, match="reference"):  # only SimPO goes without reference log-probs
        preference_loss("sigmoid", CR(t(-1.0), t(-2.0)), None, CR(t(1.0), t(1.0)), 0.1)
    # each name reaches its own loss (robust and hinge: the values of the tests above; IPO: chosen
    # (-4 - -6) / 1 = 2, rejected (-9 - -6) / 3 = -1, h = 3, beta 0.25 -> (3 - 2)^2 = 1)
    policy, reference, tokens = CR(t(-1.0), t(-3.5)), CR(t(-1.5), t(-2.0)), CR(t(1.0), t(3.0))
    robust = preference_loss("robust", policy, reference, tokens, 0.2, label_smoothing=0.1)[0]
    hinge = preference_loss("hinge", policy, reference, tokens, 0.2)[0]
    ipo = preference_loss("ipo", CR(t(-4.0), t(-9.0)), CR(t(-6.0), t(-6.0)), tokens, 0.25)[0]
    assert (robust.item(), hinge.item(), ipo.item()) == pytest.approx((0.46301525239995256, 0.6, 1.0), abs=1e-6)
    # SimPO's gamma defaults to TRL's 0.5: beta 2, one-token answers -> -log sigmoid(2 * -1 - 2 * -3.5 - 0.5)
    simpo = preference_loss("simpo", policy, None, CR(t(1.0), t(1.0)), 2.0)[0]
    assert simpo.item() == pytest.approx(math.log1p(math.exp(-4.5)), abs=1e-6)


def test_a_pair_batch_splits_into_chosen_then_rejected():
    # PreferenceCollator's layout: chosen of pairs 0..B-1, then rejected of pairs 0..B-1
    split = CR.split(t(-1.0, -2.0, -3.0, -7.0, -8.0, -9.0))
    assert split.chosen.tolist() == [-1.0, -2.0, -3.0] and split.rejected.tolist() == [-7.0, -8.0, -9.0]


def test_nll_is_a_token_mean_over_the_batch():
    # sequences with summed log-probs -6 (3 tokens) and -2 (1 token): (6 + 2) / 4 = 2
    assert nll_loss(t(-6.0, -2.0), torch.tensor([3, 1])).item() == pytest.approx(2.0)
    assert nll_loss(t(-2.0), torch.tensor([1])).item() == pytest.approx(2.0)  # one token: divided by 1


def test_kto_loss_hand_computed():
    # desirable: r = -5 - -6 = 1, z0 = 0.4, beta 0.5 -> 1 - sigmoid(0.5 * 0.6) = 0.42555748
    # undesirable: r = -8 - -7 = -1 -> 1 - sigmoid(0.5 * (0.4 + 1)) = 0.33181223, weighted x 2
    losses, rewards = kto_loss(
        t(-5.0, -8.0), t(-6.0, -7.0), torch.tensor([True, False]), t(0.4), beta=0.5, undesirable_weight=2.0
    )
    assert losses.tolist() == pytest.approx([0.42555748318834097, 2 * 0.33181222783183384], abs=1e-6)
    assert rewards.tolist() == pytest.approx([0.5, -0.5])
    assert kto_loss(t(-4.0), t(-6.0), torch.tensor([True]), t(0.0), 0.5)[1].item() == pytest.approx(1.0)  # 0.5 x 2
    # equal log-probs and zero KL: 1 - sigmoid(0) = 0.5 for both kinds
    assert kto_loss(t(-3.0, -3.0), t(-3.0, -3.0), torch.tensor([True, False]), t(0.0), 0.1)[
        0
    ].tolist() == pytest.approx([0.5, 0.5])


def test_kto_kl_estimate_is_clamped_and_detached():
    policy = t(-5.0, -9.0).requires_grad_()
    # mean(-5 - -6, -9 - -7) = mean(1, -2) = -0.5 -> clamped to 0; mean(1, 3) = 2
    assert kto_kl_estimate(policy, t(-6.0, -7.0)).item() == 0.0
    kl = kto_kl_estimate(policy, t(-6.0, -12.0))
    assert kl.item() == pytest.approx(2.0) and not kl.requires_grad


def test_kto_metrics_are_exact_class_means_across_batches():
    # batch 1: desirable rewards 1, 3; batch 2: desirable 5 and undesirable -1, -3
    b1 = kto_metrics(t(1.0, 3.0), t(-1.0, -2.0), torch.tensor([True, True]), t(0.1))
    b2 = kto_metrics(t(5.0, -1.0, -3.0), t(-3.0, -4.0, -5.0), torch.tensor([True, False, False]), t(0.3))
    averaged = {k: (float(b1[k]) + float(b2[k])) / 2 for k in b1}
    out = kto_finalize_metrics(averaged)
    assert out["rewards/chosen"] == pytest.approx(3.0)  # (1 + 3 + 5) / 3, not the mean of batch means (2 and 5)
    assert out["rewards/rejected"] == pytest.approx(-2.0)
    assert out["rewards/margins"] == pytest.approx(5.0)
    assert out["kl"] == pytest.approx(0.2)
    assert not any(k.endswith("_sum") or k.startswith("count/") for k in out)


def test_orpo_loss_hand_computed():
    # log odds(p) = m - log(1 - e^m): m = -0.5 -> 0.43275213; m = -2 -> -1.85458654; diff = 2.28733867
    # ratio loss = -log sigmoid(2.28733867) = 0.09670586; total = nll 1.2 + 0.1 * 0.09670586
    assert log_odds(t(-0.5)).item() == pytest.approx(0.43275212956718856, abs=1e-6)
    loss, ratio, diff = orpo_loss(t(-0.5), t(-2.0), torch.tensor(1.2), lam=0.1)
    assert diff.item() == pytest.approx(2.2873386716983295, abs=1e-5)
    assert ratio.item() == pytest.approx(0.09670586364939968, abs=1e-6)
    assert loss.item() == pytest.approx(1.2 + 0.1 * 0.09670586364939968, abs=1e-6)
    # equal responses: log 2; probabilities near 1 stay finite
    assert orpo_loss(t(-1.0), t(-1.0), torch.tensor(0.0), 1.0)[0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.isfinite(orpo_loss(t(-1e-9), t(-50.0), torch.tensor(0.0), 1.0)[0])
    # a mean log-prob of exactly 0 is read as -1e-6: -1e-6 - log(1 - e^-1e-6) = 13.81551006 (13.80 in fp32,
    # which rounds e^-1e-6; -1.5e-6 would give 13.41, no clamp inf)
    assert log_odds(t(0.0)).item() == pytest.approx(13.815510057980095, abs=0.05)


def test_bradley_terry_with_and_without_margin():
    # r_w - r_l = 1.5 - 0.5 = 1 -> -log sigmoid(1) = 0.31326169; margin 0.25 -> -log sigmoid(0.75) = 0.38687101
    assert bradley_terry_loss(t(1.5), t(0.5)).item() == pytest.approx(0.3132616875182228, abs=1e-6)
    assert bradley_terry_loss(t(1.5), t(0.5), t(0.25)).item() == pytest.approx(0.38687100611489994, abs=1e-6)
    # large gaps do not overflow: -log sigmoid(-1000) = 1000
    assert bradley_terry_loss(t(-500.0), t(500.0)).item() == pytest.approx(1000.0, rel=1e-6)
    metrics = reward_metrics(t(2.0, 0.0, 1.0), t(1.0, 1.0, 0.5))
    assert metrics["accuracy"].item() == pytest.approx(2 / 3) and metrics["margin"].item() == pytest.approx(0.5 / 3)
    assert reward_metrics(t(1.0, 2.0), t(1.0, 1.0))["accuracy"].item() == pytest.approx(0.5)  # a tie is not right
