"""Surviving faults without losing work: kill -9 and SIGTERM mid-run (real subprocesses) then --resume,
NaN steps skipped and counted, resume refused on a changed config or data, disk full while saving."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_run_args
from safetensors.torch import load_file

from alignkit.configs import DPOConfig, load_config
from alignkit.errors import AlignkitError, RunDirError
from alignkit.train.checkpoint import verify_checkpoint
from alignkit.train.dpo import train_dpo
from alignkit.train.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]


def args_for(model_dir, data, out, *extra):
    lora = ("--use_peft", "--lora_r", "4", "--lora_dropout", "0.2")
    return tiny_run_args(model_dir, data, out, "--preflight", "false", *lora, *extra, eval_split="0")


def same_run(a: Path, b: Path, step: int) -> None:
    assert read_metrics(a, timings=False) == read_metrics(b, timings=False)
    wa, wb = (
        load_file(str(a / f"checkpoint-{step}" / "trainable.safetensors")),
        load_file(str(b / f"checkpoint-{step}" / "trainable.safetensors")),
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alignkit", "dpo", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def resume(args: list[str]) -> None:
    """The same command plus --resume, in a fresh process; it must succeed."""
    resumed = subprocess.run(
        [sys.executable, "-m", "alignkit", "dpo", *args, "--resume"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_model_dir):
    from conftest import write_pairs

    root = tmp_path_factory.mktemp("faults")
    data = write_pairs(root / "pairs.jsonl", 24)
    out = root / "straight"
    train_dpo(
        load_config(
            DPOConfig,
            None,
            args_for(tiny_model_dir, data, out, "--max_steps", "10", "--save_steps", "1", "--save_total_limit", "20"),
        )
    )
    return data, out


def test_kill_9_then_resume_reaches_exactly_the_uninterrupted_run(straight, tiny_model_dir, tmp_path):
    data, reference = straight
    out = tmp_path / "killed"
    extra = ["--max_steps", "10", "--save_steps", "1", "--save_total_limit", "20"]
    proc = start(args_for(tiny_model_dir, data, out, *extra))
    wait_for(out / "checkpoint-4", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "final").exists()
    resume(args_for(tiny_model_dir, data, out, *extra))
    same_run(reference, out, 10)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(straight, tiny_model_dir, tmp_path):
    data, reference = straight
    out = tmp_path / "terminated"
    extra = ["--max_steps", "10", "--save_steps", "100", "--save_total_limit", "20"]
    proc = start(args_for(tiny_model_dir, data, out, *extra))
    wait_for(out / "metrics.jsonl", proc)
    while len((out / "metrics.jsonl").read_text().splitlines()) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    saved = sorted(out.glob("checkpoint-*"))
    assert (
        len(saved) == 1 and verify_checkpoint(saved[0]) is None
    )  # saved at the step it stopped, though save_steps is 100
    assert "--resume" in err and saved[0].name in err
    resume(args_for(tiny_model_dir, data, out, *extra))
    assert read_metrics(out, timings=False) == read_metrics(reference, timings=False)


@pytest.mark.parametrize("deferred", [False, True])
def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(
    deferred, straight, tiny_model_dir, tmp_path, monkeypatch, request
):
    import alignkit.train.dpo as dpo_module

    if deferred:
        request.getfixturevalue("deferred_reads")

    data, _ = straight
    real, calls = dpo_module.dpo_compute_loss, {"n": 0}

    def poisoned(model, batch, training, **kwargs):
        loss, metrics = real(model, batch, training, **kwargs)
        if training:
            calls["n"] += 1
            if calls["n"] in (3, 5, 6, 7):  # step 3 once, then three in a row from step 5
                loss = loss * float("nan")
        return loss, metrics

    monkeypatch.setattr(dpo_module, "dpo_compute_loss", poisoned)
    out = tmp_path / "nan"
    config = load_config(
        DPOConfig, None, args_for(tiny_model_dir, data, out, "--max_steps", "10", "--max_nonfinite_steps", "3")
    )
    with pytest.raises(AlignkitError, match="3 steps in a row") as caught:
        train_dpo(config)
    records = [r for r in read_metrics(out) if "loss" in r]
    assert [r["nonfinite_steps_skipped"] for r in records] == [0, 0, 1, 1, 2, 3, 4][: len(records)]
    assert "checkpoint-7" in str(caught.value) and "step 4" in str(
        caught.value
    )  # steps 5-7 changed nothing: step 4's weights
    kept = load_file(str(out / "checkpoint-7" / "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in kept.values())


def test_resume_refuses_a_changed_config_or_data_unless_forced(straight, tiny_model_dir, tmp_path):
    data, _ = straight
    out = tmp_path / "run"
    train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, out, "--max_steps", "2")))
    with pytest.raises(RunDirError, match="beta: 0.1 -> 0.3"):
        train_dpo(
            load_config(
                DPOConfig, None, args_for(tiny_model_dir, data, out, "--max_steps", "2", "--resume", "--beta", "0.3")
            )
        )
    changed = tmp_path / "changed.jsonl"
    changed.write_text(data.read_text().replace("Let me think", "Let us think"))
    with pytest.raises(RunDirError, match="training data changed"):
        train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, changed, out, "--max_steps", "2", "--resume")))
    result = train_dpo(
        load_config(
            DPOConfig,
            None,
            args_for(tiny_model_dir, data, out, "--max_steps", "2", "--resume", "--beta", "0.3", "--force_resume"),
        )
    )
    assert result.global_step == 2


def test_disk_full_while_saving_keeps_the_previous_checkpoint(straight, tiny_model_dir, tmp_path, monkeypatch):
    import alignkit.train.checkpoint as checkpoint_module

    data, _ = straight
    real, calls = checkpoint_module.save_file, {"n": 0}

    def filling(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            with open(path, "wb") as handle:
                handle.write(b"\0" * 100)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", filling)
    out = tmp_path / "full"
    with pytest.raises(AlignkitError, match="No space left on device") as caught:
        train_dpo(
            load_config(DPOConfig, None, args_for(tiny_model_dir, data, out, "--max_steps", "6", "--save_steps", "2"))
        )
    assert "checkpoint-2 is intact" in str(caught.value) and "--resume" in str(caught.value)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == ["checkpoint-2"]
    assert verify_checkpoint(out / "checkpoint-2") is None


def test_a_torn_last_metrics_line_does_not_block_resume(straight, tiny_model_dir, tmp_path):
    data, reference = straight
    out = tmp_path / "torn"
    extra = ["--max_steps", "10", "--save_steps", "1", "--save_total_limit", "20"]
    train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, out, *extra)))
    for path in sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[5:]:
        shutil.rmtree(path)
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 11, "loss": 0.5, "rew')  # killed mid-write
    train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, out, *extra, "--resume")))
    assert read_metrics(out, timings=False) == read_metrics(reference, timings=False)
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 10


def test_a_killed_runs_logs_read_without_their_torn_last_line(tmp_path):
    """metrics.jsonl and samples.jsonl are appended to line by line: a process killed mid-write leaves a torn
    last line, which reading (the report, log_history) and resuming (an RL run's samples) leave out. A broken
    line anywhere else is damage, and names its file and line."""
    from alignkit.log_files import truncate_after
    from alignkit.report.build import read_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.69}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    assert read_metrics(run) == [{"step": 1, "loss": 0.69}, {"step": 2, "loss": 0.5}]
    assert [r["step"] for r in read_run(run).records] == [1, 2]
    first = '{"step": 1, "prompt": "a", "response": "b", "score": 1.0}\n'
    (run / "samples.jsonl").write_text(
        first + '{"step": 2, "prompt": "a", "response": "c", "score": 0.5}\n{"step": 2, "pro'
    )
    truncate_after(run / "samples.jsonl", 1)  # an RL run resumed at step 1
    assert (run / "samples.jsonl").read_text() == first
    truncate_after(run / "never-written.jsonl", 1)  # stopped before its first record: nothing to cut, nothing made
    assert not (run / "never-written.jsonl").exists()
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
    with pytest.raises(AlignkitError, match=r"metrics.jsonl:2: not a JSON record"):
        read_metrics(run)


def test_unsupported_launches_are_refused_clearly(monkeypatch):
    import sys

    from alignkit.train.backends import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(AlignkitError, match="FSDP2 only.*fsdp_version: 2.*examples/accelerate/fsdp2.yaml"):
        make_accelerator()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if not installed
    with pytest.raises(AlignkitError, match=r"pip install 'alignkit\[deepspeed\]'"):
        make_accelerator()


def test_deferred_host_reads_log_what_per_step_reads_log(straight, tiny_model_dir, tmp_path, deferred_reads):
    """Norms and metrics summed on the device and read once per logging window (4 steps here) give the
    figures of reading them every step (this CPU's default)."""
    from alignkit.train.session import TrainingSession

    data, _ = straight
    extra = ("--max_steps", "8", "--logging_steps", "4")
    train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, tmp_path / "deferred", *extra)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainingSession, "defers_host_reads", property(lambda self: False))
        train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, tmp_path / "host", *extra)))
    deferred, host = (
        [r for r in read_metrics(tmp_path / name, timings=False) if "loss" in r] for name in ("deferred", "host")
    )
    assert len(deferred) == len(host) == 2
    for ours, theirs in zip(deferred, host):
        assert ours == pytest.approx(theirs, rel=1e-6)


def test_a_stop_signal_between_logs_resumes_exactly_with_deferred_reads(
    straight, tiny_model_dir, tmp_path, deferred_reads
):
    """On a GPU the gradient norms of a logging window are read at the log; a SIGTERM that lands mid-window
    (after the loop last looked) checkpoints there, and the checkpoint's window must still hold those norms:
    the resumed run logs what the uninterrupted one does."""
    import os

    from alignkit.train.faults import TrainingInterrupted

    data, _ = straight
    extra = ("--max_steps", "8", "--logging_steps", "4", "--save_steps", "100")
    train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, tmp_path / "straight", *extra)))
    out = tmp_path / "stopped"

    def stop_at_3(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, out, *extra)), on_step=stop_at_3)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    train_dpo(load_config(DPOConfig, None, args_for(tiny_model_dir, data, out, *extra, "--resume")))
    logged = [r for r in read_metrics(out, timings=False) if "loss" in r]
    assert [r["step"] for r in logged] == [4, 8]
    assert read_metrics(out, timings=False) == read_metrics(tmp_path / "straight", timings=False)
