"""report_to: wandb, tested offline: every logged value reaches the run's offline wandb file."""

import json


def test_wandb_offline_run_records_every_logged_metric(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    from alignkit.configs import DPOConfig, load_config
    from alignkit.train.dpo import train_dpo
    from alignkit.train.metrics_log import read_metrics

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train_dpo(
        load_config(
            DPOConfig,
            None,
            [
                "--model",
                str(tiny_model_dir),
                "--train_data",
                str(pairs_file),
                "--output_dir",
                str(out),
                "--max_steps",
                "3",
                "--logging_steps",
                "1",
                "--per_device_train_batch_size",
                "2",
                "--max_length",
                "64",
                "--max_prompt_length",
                "32",
                "--disable_tqdm",
                "--report_to",
                "wandb",
                "--preflight",
                "false",
            ],
        )
    )
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    logged = [r for r in read_metrics(out) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for record in logged:  # values are stored as JSON text inside the run's records
        for key in ("loss", "logps/chosen", "rewards/margins"):
            assert json.dumps(record[key]).encode() in data, (record["step"], key)
    assert b"rewards/accuracies" in data and (out / "tensorboard").is_dir()  # TensorBoard stays on beside wandb


def test_resume_purges_tensorboard_and_continues_the_wandb_run(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    """A run stopped after step 4 with a checkpoint at step 2, then resumed: TensorBoard holds each step
    once (the discarded steps 3-4 purged), and wandb continues the run under the id kept in the run directory."""
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_training import config_for

    from alignkit.train.dpo import train_dpo

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    extra = ("--max_steps", "4", "--save_steps", "2", "--report_to", "wandb", "--run_name", "my-run")
    train_dpo(config_for(tiny_model_dir, pairs_file, out, *extra))
    run_id = (out / "wandb_run_id").read_text()
    shutil.rmtree(out / "checkpoint-4")
    shutil.rmtree(out / "final")
    train_dpo(config_for(tiny_model_dir, pairs_file, out, *extra, "--resume"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]  # not 1, 2, 3, 4, 3, 4
    assert (out / "wandb_run_id").read_text() == run_id
    runs = sorted(p.name for p in (out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(f"-{run_id}" in name for name in runs)  # one wandb run id, continued
    assert b"my-run" in next((out / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()


def test_the_metrics_log_keeps_non_finite_values_writes_a_symptom_once_and_resumes_at_a_step(tmp_path, capsys):
    """metrics.jsonl, without a model: NaN and inf kept as text (JSON has no such numbers), a symptom its
    own line beside the record that fired it and printed, a resume dropping later lines and replaying the
    rest into the monitor (so a symptom already reported is not reported again), nothing from a process
    that does not log, and the progress bar's figures."""
    from alignkit.diagnose.symptoms import Symptom
    from alignkit.train.metrics_log import MetricsLogger, progress_postfix, read_metrics

    class FiresOnceAboveOne:
        def __init__(self):
            self.fired = False

        def observe(self, step, metrics):
            if self.fired or metrics.get("loss", 0) <= 1:
                return []
            self.fired = True
            return [Symptom("loss_up", step, "loss above 1.", "Lower the learning rate.")]

    logger = MetricsLogger(tmp_path, report_to=[], monitor=FiresOnceAboveOne())
    logger.record(1, {"loss": 0.5, "grad_norm": float("nan")})
    logger.record(2, {"loss": 2.0, "grad_norm": float("inf")})
    logger.record(3, {"loss": 3.0})
    assert capsys.readouterr().err.count("alignkit: warning: step 2: loss above 1. Lower the learning rate.") == 1
    assert read_metrics(tmp_path) == [
        {"step": 1, "loss": 0.5, "grad_norm": "nan"},
        {"step": 2, "loss": 2.0, "grad_norm": "inf"},
        {"step": 2, "symptom": "loss_up", "message": "loss above 1.", "advice": "Lower the learning rate."},
        {"step": 3, "loss": 3.0},
    ]
    resumed = MetricsLogger(tmp_path, report_to=[], monitor=FiresOnceAboveOne())
    resumed.resume_at(2)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 2]
    resumed.record(3, {"loss": 4.0})  # the monitor saw step 2's loss on replay: nothing fires again
    assert "symptom" not in read_metrics(tmp_path)[-1] and capsys.readouterr().err == ""

    quiet = tmp_path / "other-process"
    quiet.mkdir()
    MetricsLogger(quiet, report_to=["tensorboard"], enabled=False).record(1, {"loss": 1.0})
    assert list(quiet.iterdir()) == []
    postfix = progress_postfix({"loss": 0.693147, "rewards/margins": 0.01234, "step_time": 2.5, "grad_norm": 3.0})
    assert postfix == {"loss": "0.6931", "margin": "0.01234", "s/step": "2.5"}
