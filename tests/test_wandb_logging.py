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
