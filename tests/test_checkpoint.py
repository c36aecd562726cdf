"""Checkpoint files on their own: what a save writes and prunes, what a load restores (weights, optimizer,
scheduler, every RNG), and what it refuses."""

import json
import random

import numpy as np
import pytest
import torch

from alignkit.train.checkpoint import (
    MANIFEST,
    latest_good_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
    verify_checkpoint,
)


def trained_parts(seed=0):
    """A model with a frozen and a trainable layer, its optimizer after one update, and a scheduler."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def save(run_dir, step, parts, limit=None, state=None):
    model, optimizer, scheduler = parts
    return save_checkpoint(
        run_dir, step, trainable_state(model), optimizer, scheduler, state or {"global_step": step}, limit
    )


def test_a_checkpoint_keeps_only_trainable_weights_and_the_newest_n_survive(tmp_path):
    parts = trained_parts()
    for step in (1, 2, 10, 11):
        save(tmp_path, step, parts, limit=3)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 10, 11]  # by step number, not by name
    save(tmp_path, 12, parts, limit=None)  # None keeps them all
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 10, 11, 12]
    path = tmp_path / "checkpoint-12"
    files = json.loads((path / MANIFEST).read_text())["files"]
    assert sorted(files) == sorted(
        ["trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_0.pt", "trainer_state.json"]
    )
    from safetensors.torch import load_file

    assert sorted(load_file(str(path / "trainable.safetensors"))) == ["1.bias", "1.weight"]
    assert not list(tmp_path.glob(".checkpoint-*"))  # no staging folder left behind


def test_load_restores_weights_optimizer_scheduler_and_every_rng(tmp_path):
    parts = trained_parts(seed=0)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save(tmp_path, 5, parts, state={"global_step": 5, "epoch": 1})
    expected_draws = (random.random(), float(np.random.rand()), float(torch.rand(())))

    model, optimizer, scheduler = trained_parts(seed=7)  # other weights, moments and schedule position
    scheduler.step()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = load_checkpoint(tmp_path / "checkpoint-5", model, optimizer, scheduler)
    assert state == {"global_step": 5, "epoch": 1}
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected_draws
    original = parts[0]
    assert torch.equal(model[1].weight, original[1].weight) and torch.equal(model[1].bias, original[1].bias)
    assert not torch.equal(model[0].weight, original[0].weight)  # frozen weights are not in a checkpoint
    moments = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments, parts[1].state_dict()["state"][0]["exp_avg"])
    assert scheduler.last_epoch == 1 and scheduler.get_last_lr() == parts[2].get_last_lr() == [0.05]


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    save(tmp_path, 1, trained_parts())
    model, optimizer, scheduler = trained_parts()
    model[0].requires_grad_(True)  # e.g. full fine-tuning where LoRA was trained
    with pytest.raises(RuntimeError, match=r"missing \['0.bias', '0.weight'\], unexpected \[\]"):
        load_checkpoint(tmp_path / "checkpoint-1", model, optimizer, scheduler)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: (p / MANIFEST).unlink(), "manifest.json is missing"),
        (lambda p: (p / MANIFEST).write_text("{"), "manifest.json is unreadable"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda p: (p / "scheduler.pt").write_bytes(b"x"), "scheduler.pt is truncated or corrupt"),
        (
            lambda p: (p / "trainer_state.json").write_text(
                (p / "trainer_state.json").read_text().replace("3", "4")  # same size, other bytes
            ),
            "trainer_state.json is truncated or corrupt",
        ),
    ],
)
def test_a_damaged_checkpoint_is_named_and_the_previous_good_one_used(tmp_path, damage, problem):
    parts = trained_parts()
    save(tmp_path, 2, parts)
    save(tmp_path, 3, parts)
    assert verify_checkpoint(tmp_path / "checkpoint-3") is None
    damage(tmp_path / "checkpoint-3")
    assert verify_checkpoint(tmp_path / "checkpoint-3").startswith(problem)
    with pytest.warns(UserWarning, match="checkpoint-3 is unusable"):
        assert latest_good_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_a_staging_folder_left_by_a_killed_save_is_cleared_not_kept(tmp_path):
    stale = tmp_path / ".checkpoint-4.tmp"
    stale.mkdir()
    (stale / "optimizer.pt").write_bytes(b"half")  # killed mid-save
    (stale / "junk.bin").write_bytes(b"x")
    path = save(tmp_path, 4, trained_parts())
    assert verify_checkpoint(path) is None and not (path / "junk.bin").exists() and not stale.exists()


def test_saving_a_step_again_replaces_it_and_a_failed_swap_keeps_the_old_one(tmp_path, monkeypatch):
    first, second = trained_parts(seed=0), trained_parts(seed=1)
    save(tmp_path, 3, first, state={"global_step": 3, "run": "first"})
    save(tmp_path, 3, second, state={"global_step": 3, "run": "second"})
    assert json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())["run"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]  # nothing set aside is left
    # killed between setting the old one aside and renaming the new one in: the old one is still on disk, whole
    import alignkit.train.checkpoint as checkpoint

    real_replace = checkpoint.os.replace

    def fail_second_rename(src, dst):
        if str(src).endswith(".tmp"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", fail_second_rename)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 3, first, state={"global_step": 3, "run": "third"})
    assert not (tmp_path / "checkpoint-3").exists() and verify_checkpoint(tmp_path / ".checkpoint-3.old") is None

    def another_process_first(src, dst):  # every process of a resumed run puts it back: one of them wins
        real_replace(src, dst)
        real_replace(src, dst)  # ours then finds nothing to move

    monkeypatch.setattr(checkpoint.os, "replace", another_process_first)
    assert latest_good_checkpoint(tmp_path) == tmp_path / "checkpoint-3"  # --resume puts it back
    assert json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())["run"] == "second"
    assert not (tmp_path / ".checkpoint-3.old").exists()
