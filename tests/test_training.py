"""DPO training end to end on a tiny random model: run directory, outputs, refusal, exact resume."""

import json

import pytest
import torch
from conftest import tiny_run_args
from safetensors.torch import load_file

import alignkit.train.dpo as dpo_module
from alignkit.cli import main
from alignkit.configs import DPOConfig, load_config
from alignkit.errors import RunDirError
from alignkit.train.dpo import train_dpo
from alignkit.train.metrics_log import read_metrics

TRL_KEYS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
}


def config_for(model_dir, data, out, *extra):
    return load_config(DPOConfig, None, tiny_run_args(model_dir, data, out, *extra))


def test_throughput_counts_real_tokens_and_training_time_only(monkeypatch):
    from alignkit.train import metrics_log
    from alignkit.train.metrics_log import Throughput

    clock = iter(
        [0.0, 1.0, 3.0, 10.0, 12.0, 20.0]
    )  # start; step 1 from 1 to 3; (an eval); step 2 from 10 to 12; summary at 20
    monkeypatch.setattr(metrics_log.time, "perf_counter", lambda: next(clock))
    meter = Throughput(scale=2)
    meter.begin_step()
    meter.end_step(samples=4, tokens=100)
    meter.begin_step()
    meter.end_step(samples=4, tokens=60)
    assert meter.window() == {"step_time": 2.0, "samples_per_second": 2 * 8 / 4, "tokens_per_second": 2 * 160 / 4}
    assert meter.summary() == {
        "train_runtime": 20.0,
        "train_samples_per_second": 2 * 8 / 20,
        "train_steps_per_second": 2 / 20,
        "train_tokens_per_second": 2 * 160 / 20,
    }


def test_full_finetune_run_directory_layout(tiny_model_dir, pairs_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    # a live reference: step 1 scores policy and reference on the very same batch, so the loss is exactly log 2
    # (precomputed values come from other batches: equal to ~1e-5,
    # as test_precomputed_reference_gives_the_same_losses checks)
    result = train_dpo(
        config_for(
            tiny_model_dir,
            pairs_file,
            out,
            "--max_steps",
            "4",
            "--save_steps",
            "2",
            "--eval_steps",
            "2",
            "--report_to",
            "tensorboard",
            "--precompute_ref_log_probs",
            "false",
        )
    )
    assert result.global_step == 4
    assert (out / "config.yaml").is_file() and (out / "tensorboard").is_dir()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    records = read_metrics(out)
    train_records = [r for r in records if "loss" in r]
    eval_records = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    assert [r["step"] for r in eval_records] == [2, 4]
    assert TRL_KEYS <= set(train_records[0]) and {"grad_norm", "learning_rate", "epoch"} <= set(train_records[0])
    assert {f"eval/{k}" for k in TRL_KEYS} <= set(eval_records[0])
    # step 1: policy == reference, so the loss is exactly log 2 and rewards are zero
    assert train_records[0]["loss"] == pytest.approx(0.6931472, abs=1e-5)
    assert train_records[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert train_records[-1]["rewards/margins"] > 0  # the policy learned the preference
    for r in train_records:  # throughput per log: 2 pairs per step, timed over the training work only
        assert r["samples_per_second"] * r["step_time"] == pytest.approx(2.0)
        assert r["tokens_per_second"] > r["samples_per_second"]
    summary = records[-1]
    assert summary["step"] == 4 and summary["train_steps_per_second"] * summary["train_runtime"] == pytest.approx(4.0)
    assert summary["train_samples_per_second"] * summary["train_runtime"] == pytest.approx(8.0)
    assert summary["train_runtime"] >= sum(
        r["step_time"] for r in train_records
    )  # evaluation and checkpoints count in the runtime
    reloaded = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not torch.equal(
        reloaded.model.layers[0].mlp.up_proj.weight,
        AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.layers[0].mlp.up_proj.weight,
    )
    assert (out / "final" / "tokenizer_config.json").is_file()


def test_lora_saves_an_adapter_loadable_with_peft(tiny_model_dir, pairs_file, tmp_path):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "run"
    train_dpo(
        config_for(
            tiny_model_dir,
            pairs_file,
            out,
            "--max_steps",
            "2",
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_target_modules",
            "q_proj,v_proj",
        )
    )
    assert (out / "final" / "adapter_config.json").is_file()
    assert not (out / "final" / "model.safetensors").exists()  # an adapter, not a copy of the model
    model = AutoPeftModelForCausalLM.from_pretrained(out / "final")
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_refuses_existing_output_dir_and_overwrites_when_asked(tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = [
        "dpo",
        "--model",
        str(tiny_model_dir),
        "--train_data",
        str(pairs_file),
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--disable_tqdm",
        "--report_to",
        "none",
        "--max_length",
        "64",
        "--max_prompt_length",
        "32",
    ]
    assert main(args) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    # --overwrite replaces a run directory, never a folder that holds no run (a mistyped path)
    assert main(args + ["--overwrite"]) == 2
    assert "holds no training run (precious.txt)" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    assert main(args) == 0 and (out / ".alignkit-run").is_file()
    (out / "checkpoint-99").mkdir()  # a stale checkpoint of the run being replaced
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "checkpoint-99").exists() and (out / "final").is_dir()


def test_overwrite_never_deletes_the_working_or_home_directory(tmp_path, monkeypatch):
    from alignkit.errors import RunDirError
    from alignkit.train.run_dir import check_run_dir

    work = tmp_path / "project"
    (work / "src").mkdir(parents=True)
    (work / "metrics.jsonl").write_text("")  # looks like a run, yet it is where the user works
    (work / "src" / "main.py").write_text("")
    monkeypatch.chdir(work / "src")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "notes").mkdir(parents=True)
    for path in (work, work / "src", tmp_path / "home"):
        with pytest.raises(RunDirError, match="working directory, one above it or the home directory"):
            check_run_dir(path, overwrite=True)
    (work / "src" / "run").mkdir()
    (work / "src" / "run" / "checkpoint-4").mkdir()
    assert check_run_dir(work / "src" / "run", overwrite=True) == (work / "src" / "run", True)


def test_resume_without_checkpoint_is_refused(tiny_model_dir, pairs_file, tmp_path):
    with pytest.raises(RunDirError, match="no run to resume"):
        train_dpo(config_for(tiny_model_dir, pairs_file, tmp_path / "missing", "--max_steps", "1", "--resume"))
    started = tmp_path / "started"  # a run stopped before its first checkpoint
    started.mkdir()
    (started / "config.yaml").write_text("beta: 0.1\n")
    with pytest.raises(RunDirError, match=f"--resume: no usable checkpoint in {started}; start again without"):
        train_dpo(config_for(tiny_model_dir, pairs_file, started, "--max_steps", "1", "--resume"))


def _crash_after(monkeypatch, calls: int):
    real = dpo_module.dpo_compute_loss
    seen = {"n": 0}

    def crashing(model, batch, training, **kwargs):
        if training:
            seen["n"] += 1
            if seen["n"] > calls:
                raise RuntimeError("simulated crash")
        return real(model, batch, training, **kwargs)

    monkeypatch.setattr(dpo_module, "dpo_compute_loss", crashing)


def test_resume_reaches_exactly_the_uninterrupted_run(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    # LoRA dropout exercises the RNG restore; accumulation exercises the data position.
    extra = [
        "--max_steps",
        "6",
        "--save_steps",
        "2",
        "--use_peft",
        "--lora_r",
        "4",
        "--lora_dropout",
        "0.3",
        "--gradient_accumulation_steps",
        "2",
        "--per_device_train_batch_size",
        "1",
        "--eval_steps",
        "3",
        "--logging_steps",
        "1",
    ]
    straight = tmp_path / "straight"
    train_dpo(config_for(tiny_model_dir, pairs_file, straight, *extra))

    interrupted = tmp_path / "interrupted"
    with monkeypatch.context() as patch:
        _crash_after(patch, calls=9)  # dies inside step 5, after checkpoint-4 and the step-3 eval
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_dpo(config_for(tiny_model_dir, pairs_file, interrupted, *extra))
    assert (interrupted / "checkpoint-4").is_dir() and not (interrupted / "final").exists()
    train_dpo(config_for(tiny_model_dir, pairs_file, interrupted, *extra, "--resume"))

    assert read_metrics(straight, timings=False) == read_metrics(interrupted, timings=False)
    a, b = (
        load_file(str(straight / "checkpoint-6" / "trainable.safetensors")),
        load_file(str(interrupted / "checkpoint-6" / "trainable.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    extra = ["--max_steps", "6", "--save_steps", "2", "--save_total_limit", "3"]
    with monkeypatch.context() as patch:
        _crash_after(patch, calls=5)
        with pytest.raises(RuntimeError):
            train_dpo(config_for(tiny_model_dir, pairs_file, out, *extra))
    with open(out / "checkpoint-4" / "optimizer.pt", "r+b") as handle:
        handle.truncate(100)
    with pytest.warns(UserWarning, match="checkpoint-4 is unusable"):
        result = train_dpo(config_for(tiny_model_dir, pairs_file, out, *extra, "--resume"))
    assert result.global_step == 6
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_auto_precomputes_where_that_is_cheaper(tiny_model_dir, pairs_file, tmp_path):
    from alignkit.engine.reference import precompute_wanted

    def wanted(*extra, n_train=20, processes=1):
        return precompute_wanted(config_for(tiny_model_dir, pairs_file, tmp_path, *extra), n_train, processes)

    assert wanted("--max_steps", "1")  # full fine-tuning: always (the frozen copy leaves memory)
    assert not wanted("--use_peft", "--max_steps", "9")  # LoRA, 18 of 20 pairs scored: the live reference is cheaper
    assert wanted("--use_peft", "--max_steps", "10") and wanted("--use_peft", "--max_steps", "5", processes=2)
    # a step scores batch x accumulation x processes pairs: 5 x 2 x 2 = 20 of 20, 4 x 2 x 2 = 16
    assert wanted("--use_peft", "--max_steps", "5", "--gradient_accumulation_steps", "2")
    assert not wanted("--use_peft", "--max_steps", "4", "--gradient_accumulation_steps", "2")
    assert wanted("--use_peft") and not wanted("--use_peft", "--num_train_epochs", "0.5")
    # epochs capped at 3 steps of 2 pairs score 6 of 20 pairs each: 3 epochs are still short, 4 are not
    assert not wanted("--use_peft", "--max_steps_per_epoch", "3", "--num_train_epochs", "3")
    assert wanted("--use_peft", "--max_steps_per_epoch", "3", "--num_train_epochs", "4")
    assert not wanted("--precompute_ref_log_probs", "false") and wanted(
        "--use_peft", "--max_steps", "1", "--precompute_ref_log_probs", "true"
    )


def test_precomputed_reference_gives_the_same_losses(tiny_model_dir, pairs_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    live = train_dpo(
        config_for(
            tiny_model_dir, pairs_file, tmp_path / "live", "--max_steps", "3", "--precompute_ref_log_probs", "false"
        )
    )
    cached = train_dpo(
        config_for(tiny_model_dir, pairs_file, tmp_path / "cached", "--max_steps", "3", "--precompute_ref_log_probs")
    )
    cache_files = sorted((tmp_path / "cache" / "ref_logps").glob("*.safetensors"))
    assert len(cache_files) == 2  # one for the train pairs, one for the eval pairs
    assert "reference log-probs of 12 examples computed in" in capsys.readouterr().err  # 9 train + 3 eval pairs
    live_records, cached_records = (read_metrics(r.run_dir, timings=False) for r in (live, cached))
    assert len(live_records) == len(cached_records) > 3  # every log, evaluation and the summary
    for a, b in zip(live_records, cached_records):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    again = train_dpo(
        config_for(tiny_model_dir, pairs_file, tmp_path / "again", "--max_steps", "3", "--precompute_ref_log_probs")
    )
    assert read_metrics(again.run_dir, timings=False) == read_metrics(cached.run_dir, timings=False)
    assert "reference log-probs of 12 examples read from the cache" in capsys.readouterr().err
    assert sorted((tmp_path / "cache" / "ref_logps").glob("*.safetensors")) == cache_files  # reused, not recomputed


def test_metrics_lines_are_strict_json_and_only_the_main_process_writes(tmp_path):
    from alignkit.train.metrics_log import MetricsLogger

    logger = MetricsLogger(tmp_path, ["tensorboard"])
    logger.log(3, {"loss": float("nan"), "grad_norm": float("inf"), "rewards/margins": 0.25})
    logger.close()
    line = (tmp_path / "metrics.jsonl").read_text()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    # NaN/Infinity are not JSON (jq, JavaScript and pandas' strict readers refuse them): written as strings
    assert json.loads(line, parse_constant=refuse) == {
        "step": 3,
        "loss": "nan",
        "grad_norm": "inf",
        "rewards/margins": 0.25,
    }
    assert (tmp_path / "tensorboard").is_dir()
    other = tmp_path / "rank1"
    other.mkdir()
    quiet = MetricsLogger(other, ["tensorboard"], enabled=False)  # another process of a distributed run
    quiet.log(3, {"loss": 0.5})
    quiet.close()
    assert list(other.iterdir()) == []


def test_a_resumed_logger_drops_later_lines_and_does_not_repeat_a_reported_symptom(tmp_path):
    from alignkit.diagnose.symptoms import SymptomMonitor
    from alignkit.train.metrics_log import MetricsLogger

    nan = {"loss": float("nan")}
    logger = MetricsLogger(tmp_path, ["none"], monitor=SymptomMonitor(10))
    logger.record(1, {"loss": 0.7})
    logger.record(2, nan)  # the symptom is written as its own line
    logger.record(3, {"loss": 0.6})  # after the checkpoint of step 2: dropped on resume
    resumed = MetricsLogger(tmp_path, ["none"], monitor=SymptomMonitor(10), resumed_at=2)
    resumed.resume_at(2)
    resumed.record(3, nan)
    assert [(r["step"], r.get("symptom"), r.get("loss")) for r in read_metrics(tmp_path)] == [
        (1, None, 0.7),
        (2, None, "nan"),
        (2, "nonfinite_loss", None),
        (3, None, "nan"),
    ]
