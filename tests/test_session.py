"""The skeleton every loop shares: a checkpoint holds exactly the loop state, an older checkpoint still
resumes, and the rows are tokenized once (the pre-flight measures the trainer's own tokens)."""

import hashlib
import json
from dataclasses import fields

import pytest

from alignkit.train.dpo import train_dpo
from alignkit.train.session import LoopState


def test_a_checkpoint_holds_exactly_the_loop_state(tiny_model_dir, pairs_file, tmp_path):
    from test_training import config_for

    out = tmp_path / "run"
    train_dpo(config_for(tiny_model_dir, pairs_file, out, "--max_steps", "3", "--save_steps", "2"))
    hf_state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    saved = hf_state["alignkit_state"]
    assert set(saved) == {f.name for f in fields(LoopState)}
    # transformers' TrainerState fields around it: what plotting scripts read
    assert (hf_state["global_step"], hf_state["max_steps"], hf_state["epoch"]) == (2, 3, pytest.approx(2 / 5))
    assert [r["step"] for r in hf_state["log_history"] if "loss" in r] == [1, 2]
    assert hf_state["log_history"][0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    # 12 pairs, eval_split 0.25 -> 9 train pairs in 5 micro-batches of 2; step 2 is 2 micro-batches in
    assert (saved["global_step"], saved["epoch"], saved["batches_done"], saved["last_good_step"]) == (2, 0, 2, 2)
    assert saved["nonfinite_skipped"] == 0 and saved["kl_coef"] is None
    assert saved["window"]["count"] == 0  # logged at every step: the window was empty when saved


def test_an_older_checkpoint_without_every_field_still_resumes():
    fingerprint = {"config": {"beta": 0.1}, "data": "abc"}
    state = LoopState.from_checkpoint(
        {"global_step": 4, "kl_coef": 0.05, "nonfinite_skipped": 1, "retired": 7}, fingerprint
    )
    assert (state.global_step, state.last_good_step, state.kl_coef, state.nonfinite_skipped) == (4, 4, 0.05, 1)
    assert state.fingerprint == fingerprint and state.window == {} and state.epoch == 0


def test_rows_are_tokenized_once_for_the_preflight_and_the_trainer(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    from test_training import config_for
    from transformers import PreTrainedTokenizerBase

    calls = []
    real = PreTrainedTokenizerBase.__call__
    monkeypatch.setattr(
        PreTrainedTokenizerBase, "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    )
    train_dpo(
        config_for(
            tiny_model_dir,
            pairs_file,
            tmp_path / "run",
            "--max_steps",
            "1",
            "--preflight",
            "true",
            "--learning_rate",
            "1e-5",
        )
    )
    # 12 pairs (9 train, 3 eval): 12 prompts + 24 responses, and the pre-flight's one chat probe of the model;
    # the pre-flight's length checks read the trainer's tokens (measuring them again cost 27 more calls)
    assert len(calls) == 12 + 24 + 1


def test_a_finished_run_writes_all_results_environment_and_a_model_card(tiny_model_dir, pairs_file, tmp_path):
    from test_training import config_for

    out = tmp_path / "run"
    train_dpo(config_for(tiny_model_dir, pairs_file, out, "--max_steps", "2"))
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_runtime"] > 0 and "eval_loss" in results and "loss" in results
    assert json.loads((out / "environment.json").read_text())["torch"].startswith("2.")
    card = (out / "final" / "README.md").read_text()
    assert "alignkit `dpo`" in card and "- beta: 0.1" in card and "tags:" in card
    assert f"base_model: {tiny_model_dir}" in card and "library_name: transformers" in card  # full fine-tuning
    assert f"- train_data: `{pairs_file}` (sha256 `{hashlib.sha256(pairs_file.read_bytes()).hexdigest()}`)" in card


@pytest.mark.parametrize("peft", ["true", "false"])
def test_a_checkpoint_loads_as_the_model_it_holds(peft, tiny_model_dir, pairs_file, tmp_path):
    """``--model run/checkpoint-N`` (eval, serve, or another run): the run's base model, its LoRA adapters
    merged when it had them, and the checkpoint's weights: at the last step, the same model as final/."""
    import torch
    from test_training import config_for

    from alignkit.models.loading import load_model_and_tokenizer

    out = tmp_path / "run"
    train_dpo(
        config_for(tiny_model_dir, pairs_file, out, "--max_steps", "2", "--use_peft", peft, "--learning_rate", "5e-2")
    )
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    logits = {}
    for name in ("checkpoint-2", "final"):
        model, tokenizer = load_model_and_tokenizer(str(out / name))
        logits[name] = model(ids).logits
        assert tokenizer.pad_token_id is not None
    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    torch.testing.assert_close(logits["checkpoint-2"], logits["final"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base(ids).logits, logits["final"], atol=1e-3)  # trained: not the base model


@pytest.mark.parametrize("checkpointing", [True, False])
def test_freed_memory_goes_back_to_the_os_after_each_step_only_under_checkpointing(
    checkpointing, tiny_model_dir, pairs_file, tmp_path, monkeypatch
):
    """On a CPU the lean setting (gradient checkpointing) trims the heap after every optimizer step; a run
    without it has chosen speed, and re-taking what a trim gave back cost it up to a fifth of its step."""
    from test_training import config_for

    import alignkit.train.session as session

    trims = []
    monkeypatch.setattr(session, "return_freed_memory", lambda: trims.append(1))
    flag = ("--gradient_checkpointing", str(checkpointing).lower())
    train_dpo(config_for(tiny_model_dir, pairs_file, tmp_path / "run", "--max_steps", "3", *flag))
    assert len(trims) == (3 if checkpointing else 0)


def test_cosine_with_min_lr_decays_to_its_floor(tiny_model_dir, pairs_file, tmp_path):
    """transformers' cosine_with_min_lr as TRL spells it (lr_scheduler_kwargs) and OpenRLHF (min_lr_ratio):
    over 3 updates without warm-up the multiplier is 0.25 + 0.75 x (1 + cos(pi t / 3)) / 2, logged after
    each update: 0.8125, 0.4375, then the floor 0.25."""
    from test_training import config_for

    from alignkit.configs import DPOConfig, load_config

    out = tmp_path / "run"
    kwargs = ["--lr_scheduler_kwargs", '{"min_lr_rate": 0.25}', "--warmup_ratio", "0", "--learning_rate", "1e-3"]
    train_dpo(
        config_for(
            tiny_model_dir, pairs_file, out, "--max_steps", "3", "--lr_scheduler_type", "cosine_with_min_lr", *kwargs
        )
    )
    rates = [
        r["learning_rate"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert rates == pytest.approx([0.8125e-3, 0.4375e-3, 0.25e-3])
    openrlhf = load_config(
        DPOConfig, None, ["--train_data", "p.jsonl", "--lr_scheduler", "cosine_with_min_lr", "--min_lr_ratio", "0.2"]
    )
    assert (openrlhf.lr_scheduler_type, openrlhf.min_lr_rate) == ("cosine_with_min_lr", 0.2)
