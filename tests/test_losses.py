"""DPO loss against numbers worked out by hand from the paper's formula."""

import math

import pytest
import torch

from alignkit.losses.preference import dpo_loss, preference_metrics


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_dpo_loss_hand_computed():
    # h = (pc - pr) - (rc - rr) = (-1 - -2) - (-1.5 - -1.5) = 1; beta = 0.1
    # loss = -log sigmoid(0.1) = log(1 + e^-0.1) = 0.6443966600735709
    losses, chosen, rejected = dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.1)
    assert losses.item() == pytest.approx(0.6443966600735709, abs=1e-6)
    assert chosen.item() == pytest.approx(0.05, abs=1e-7)  # 0.1 * (-1 - -1.5)
    assert rejected.item() == pytest.approx(-0.05, abs=1e-7)  # 0.1 * (-2 - -1.5)


def test_dpo_loss_equal_logps_is_log2():
    losses, chosen, rejected = dpo_loss(t(-3.0, -7.0), t(-3.0, -7.0), t(-3.0, -7.0), t(-3.0, -7.0), beta=0.5)
    assert torch.allclose(losses, torch.full((2,), math.log(2.0)))
    assert torch.equal(chosen, torch.zeros(2)) and torch.equal(rejected, torch.zeros(2))


def test_dpo_loss_batch_and_beta():
    # pair 1: h = (-4 - -10) - (-5 - -6) = 6 - 1 = 5; beta 0.2 -> -log sigmoid(1) = 0.31326168751822286
    # pair 2: h = (-8 - -3) - (-6 - -4) = -5 + 2 = -3; beta 0.2 -> -log sigmoid(-0.6) = 1.0374879504858856
    losses, _, _ = dpo_loss(t(-4.0, -8.0), t(-10.0, -3.0), t(-5.0, -6.0), t(-6.0, -4.0), beta=0.2)
    assert losses.tolist() == pytest.approx([0.31326168751822286, 1.0374879504858856], abs=1e-6)


def test_label_smoothing_conservative_dpo():
    # h = 1, beta = 0.1, eps = 0.2: 0.8 * log(1 + e^-0.1) + 0.2 * log(1 + e^0.1)
    # = 0.8 * 0.6443966600735709 + 0.2 * 0.7443966600735709 = 0.6643966600735709
    losses, _, _ = dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.1, label_smoothing=0.2)
    assert losses.item() == pytest.approx(0.6643966600735709, abs=1e-6)


def test_large_margins_do_not_overflow():
    losses, _, _ = dpo_loss(t(0.0, -2000.0), t(-2000.0, 0.0), t(0.0, 0.0), t(0.0, 0.0), beta=1.0)
    assert losses[0].item() == pytest.approx(0.0, abs=1e-6)
    assert losses[1].item() == pytest.approx(2000.0, rel=1e-6)
    assert torch.isfinite(losses).all()


def test_gradient_matches_hand_derivative():
    # d loss / d pc = -beta * sigmoid(-beta * h); h = 1, beta = 0.1 -> -0.1 * sigmoid(-0.1) = -0.04750208
    pc = t(-1.0).requires_grad_()
    losses, _, _ = dpo_loss(pc, t(-2.0), t(-1.5), t(-1.5), beta=0.1)
    losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.1 / (1 + math.exp(0.1)), abs=1e-7)


def test_preference_metrics_trl_names_and_values():
    metrics = preference_metrics(t(0.3, -0.1), t(0.1, 0.2), t(-5.0, -7.0), t(-9.0, -11.0))
    assert set(metrics) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    }
    assert metrics["rewards/accuracies"].item() == pytest.approx(0.5)
    # a tie is not a win (as in TRL): accuracy counts chosen strictly above rejected
    tied = preference_metrics(t(0.2, 0.3), t(0.2, 0.1), t(-5.0, -7.0), t(-9.0, -11.0))
    assert tied["rewards/accuracies"].item() == pytest.approx(0.5)
    assert metrics["rewards/margins"].item() == pytest.approx(((0.3 - 0.1) + (-0.1 - 0.2)) / 2)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert metrics["logps/rejected"].item() == pytest.approx(-10.0)
