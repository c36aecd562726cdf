"""The skeleton every loop shares: a checkpoint holds exactly the loop state, an older checkpoint still
resumes, and the rows are tokenized once (the pre-flight measures the trainer's own tokens)."""

import json
from dataclasses import fields

from alignkit.train.dpo import train_dpo
from alignkit.train.session import LoopState


def test_a_checkpoint_holds_exactly_the_loop_state(tiny_model_dir, pairs_file, tmp_path):
    from test_training import config_for

    out = tmp_path / "run"
    train_dpo(config_for(tiny_model_dir, pairs_file, out, "--max_steps", "3", "--save_steps", "2"))
    saved = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert set(saved) == {f.name for f in fields(LoopState)}
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
