"""The RL loop survives faults like the supervised one: non-finite updates are skipped, counted and
stop the run after too many in a row; SIGTERM checkpoints and exits 143; --resume refuses a changed
config unless forced."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from test_rl import rl_args

from alignkit.configs import GRPOConfig, load_config
from alignkit.errors import AlignkitError, RunDirError
from alignkit.train.metrics_log import read_metrics


def grpo_args(model_dir, prompts, out, *extra):
    # 4 prompts x 2 completions, minibatches of 4, one epoch: 2 updates per step
    return rl_args(
        model_dir, prompts, out, "--num_generations", "2", "--num_ppo_epochs", "1", "--temperature", "1.0", *extra
    )


@pytest.mark.parametrize("deferred", [False, True])
def test_nonfinite_updates_are_skipped_counted_and_stop_the_run(
    deferred, tiny_model_dir, prompts, tmp_path, monkeypatch, request
):
    """Per-update reads stop at the third bad update in a row; deferred reads (a GPU's way) read the norms
    once per step, after its updates, so step 4's second bad update is skipped on the device too."""
    from alignkit.train.grpo import GRPO, train_grpo

    if deferred:
        request.getfixturevalue("deferred_reads")

    real, calls = GRPO.loss, {"n": 0}

    def poisoned(self, config, out, prepared):
        loss, stats = real(self, config, out, prepared)
        calls["n"] += 1
        if calls["n"] == 2 or calls["n"] >= 5:  # one bad update in step 1, then every update from step 3 on
            loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(GRPO, "loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(AlignkitError, match=f"{4 if deferred else 3} updates in a row") as caught:
        train_grpo(
            load_config(
                GRPOConfig,
                None,
                grpo_args(tiny_model_dir, prompts, out, "--max_steps", "10", "--max_nonfinite_steps", "3"),
            )
        )
    records = [r for r in read_metrics(out) if "reward/score" in r]
    # step 4's first update is the third in a row
    assert [r["nonfinite_updates_skipped"] for r in records] == [1, 1, 3, 5 if deferred else 4]
    assert "checkpoint-4" in str(caught.value)
    kept = load_file(str(out / "checkpoint-4" / "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in kept.values())
    assert (
        json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["alignkit_state"]["nonfinite_skipped"]
        == records[-1]["nonfinite_updates_skipped"]
    )


def test_sigterm_checkpoints_and_exits_with_a_resume_hint(tiny_model_dir, prompts, tmp_path, monkeypatch, capsys):
    from alignkit.cli import main
    from alignkit.train import rl_loop

    real = rl_loop.sample_rollouts
    calls = {"n": 0}

    def signalled(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step: the step finishes, then the run stops
        return real(*args, **kwargs)

    monkeypatch.setattr(rl_loop, "sample_rollouts", signalled)
    out = tmp_path / "term"
    assert (
        main(["grpo", *grpo_args(tiny_model_dir, prompts, out, "--max_steps", "6", "--save_steps", "100")])
        == 128 + signal.SIGTERM
    )
    err = capsys.readouterr().err
    assert "stopped by SIGTERM at step 2" in err and "plus --resume" in err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    monkeypatch.setattr(rl_loop, "sample_rollouts", real)
    assert (
        main(
            [
                "grpo",
                *grpo_args(
                    tiny_model_dir,
                    prompts,
                    out,
                    "--max_steps",
                    "3",
                    "--save_steps",
                    "100",
                    "--resume",
                    "--force_resume",
                ),
            ]
        )
        == 0
    )
    assert [r["step"] for r in read_metrics(out) if "reward/score" in r] == [1, 2, 3]


def test_resume_refuses_a_changed_config_unless_forced(tiny_model_dir, prompts, tmp_path):
    from alignkit.train.grpo import train_grpo

    out = tmp_path / "run"
    train_grpo(load_config(GRPOConfig, None, grpo_args(tiny_model_dir, prompts, out, "--max_steps", "1")))
    with pytest.raises(RunDirError, match="beta: 0.04 -> 0.2"):
        train_grpo(
            load_config(
                GRPOConfig,
                None,
                grpo_args(tiny_model_dir, prompts, out, "--max_steps", "2", "--resume", "--beta", "0.2"),
            )
        )
    result = train_grpo(
        load_config(
            GRPOConfig,
            None,
            grpo_args(tiny_model_dir, prompts, out, "--max_steps", "2", "--resume", "--beta", "0.2", "--force_resume"),
        )
    )
    assert result.global_step == 2
