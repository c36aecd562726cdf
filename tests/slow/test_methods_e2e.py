"""Every training command on the embedded model with the shipped example configs: metrics must move
the right way on held-out data. Marked slow; CI runs them (a few minutes in all)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit.configs import (
    DPOConfig,
    KTOConfig,
    ORPOConfig,
    RewardConfig,
    SFTConfig,
    load_config,
)
from alignkit.train.dpo import train_dpo
from alignkit.train.kto import train_kto
from alignkit.train.metrics_log import read_metrics
from alignkit.train.orpo import train_orpo
from alignkit.train.reward import train_reward
from alignkit.train.sft import train_sft

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def in_repo():
    cwd = os.getcwd()
    os.chdir(REPO)  # the example configs use repo-relative data paths
    yield
    os.chdir(cwd)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> str:
    """16 of the 32 shipped held-out pairs: evaluation runs twice per test, so it is kept small."""
    path = tmp_path_factory.mktemp("data") / "held_out.jsonl"
    path.write_text(
        "".join((REPO / "examples/data/arithmetic_pairs_heldout.jsonl").read_text().splitlines(keepends=True)[:16])
    )
    return str(path)


def config(cls, example: str, out: Path, **overrides):
    """The shipped example config, cut short: 8 steps of 4 examples."""
    values = {
        "output_dir": str(out),
        "disable_tqdm": True,
        "report_to": ["none"],
        "max_steps": 8,
        "per_device_train_batch_size": 4,
    }
    return load_config(cls, REPO / "examples" / example, {**values, **overrides})


def before_after(out: Path, key: str) -> tuple[float, float]:
    evals = [r for r in read_metrics(out) if key in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] > 0
    return evals[0][key], evals[-1][key]


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "sft"
    train_sft(config(SFTConfig, "sft.yaml", out))
    return out


def test_sft_lowers_held_out_loss(sft_model):
    before, after = before_after(sft_model, "eval/loss")
    assert after < 0.7 * before
    assert (sft_model / "final" / "adapter_config.json").is_file()


def test_reward_model_from_sft_beats_chance_and_scores_held_out_pairs(sft_model, tmp_path, held_out):
    out = tmp_path / "reward"
    train_reward(config(RewardConfig, "reward.yaml", out, model=str(sft_model / "final"), eval_data=held_out))
    before, after = before_after(out, "eval/accuracy")
    assert after >= 0.75 and after > before
    proc = subprocess.run(
        [sys.executable, "-m", "alignkit", "score", "--model", str(out / "final"), "--data", held_out],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"pairwise accuracy {after:.3f}" in proc.stdout  # same numbers as the trainer's held-out evaluation


@pytest.mark.parametrize(
    "loss_type, overrides",
    [
        # robust and hinge are checked on the tiny model (tests/test_methods.py): first loss and rising margins
        ("sigmoid", {}),  # from the SFT model: the SFT -> DPO pipeline
        ("ipo", {"beta": 0.5, "model": "embedded"}),
        ("simpo", {"beta": 2.0, "simpo_gamma": 0.5, "learning_rate": 5e-5, "model": "embedded"}),
    ],
)
def test_every_dpo_loss_raises_held_out_preference(sft_model, tmp_path, held_out, loss_type, overrides):
    out = tmp_path / loss_type
    # with a reference, held-out margins start at exactly 0 (policy == reference), so only SimPO needs the "before" pass
    values = {
        "model": str(sft_model / "final"),
        "loss_type": loss_type,
        "eval_data": held_out,
        "precompute_ref_log_probs": False,
        "eval_on_start": loss_type == "simpo",
        **overrides,
    }
    train_dpo(config(DPOConfig, "dpo_from_sft.yaml", out, **values))
    evals = [r for r in read_metrics(out) if "eval/rewards/margins" in r]
    margin_before = evals[0]["eval/rewards/margins"] if loss_type == "simpo" else 0.0
    accuracy, margin_after = evals[-1]["eval/rewards/accuracies"], evals[-1]["eval/rewards/margins"]
    # (SimPO's reference-free reward already prefers the short answers before training, so the margin is what must grow)
    assert accuracy >= 0.75 and margin_after > margin_before, (loss_type, accuracy, margin_before, margin_after)


def test_kto_raises_desirable_over_undesirable_reward(tmp_path):
    out = tmp_path / "kto"
    train_kto(config(KTOConfig, "kto.yaml", out))
    before, after = before_after(out, "eval/rewards/margins")
    assert before == pytest.approx(0.0, abs=1e-6) and after > 0.5


def test_orpo_one_stage(tmp_path, held_out):
    out = tmp_path / "orpo"
    train_orpo(config(ORPOConfig, "orpo.yaml", out, eval_data=held_out))
    # the untrained model already prefers the short answers per token (accuracy 1.0), so the odds ratio must grow
    odds_before, odds_after = before_after(out, "eval/log_odds_chosen")
    nll_before, nll_after = before_after(out, "eval/nll_loss")
    assert odds_after > odds_before and nll_after < nll_before
    assert [r for r in read_metrics(out) if "eval/rewards/accuracies" in r][-1]["eval/rewards/accuracies"] >= 0.75
