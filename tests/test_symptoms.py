"""Live symptom warnings: each rule triggered on purpose by a metric stream, none on a healthy one,
once per run, replayed on resume, and written by a real training run."""
import json

import pytest

from alignkit.diagnose.symptoms import SymptomMonitor, SymptomThresholds


def train(step, **values):
    return step, {k.replace("__", "/"): v for k, v in values.items()}


def fired(monitor, records):
    return [(s.name, s.step) for step, m in records for s in monitor.observe(step, m)]


def healthy(step):
    # margins grow, accuracy climbs slowly, chosen reward rises, rejected log-probs fall gently
    return train(step, loss=0.69 - 0.01 * step, rewards__accuracies=min(0.5 + 0.02 * step, 0.9), rewards__margins=0.05 * step,
                 rewards__chosen=0.01 * step, logps__rejected=-40.0 - step, logps__rejected_per_token=-2.0 - 0.01 * step)


def test_a_healthy_run_raises_nothing():
    monitor = SymptomMonitor(total_steps=20)
    records = [healthy(s) for s in range(1, 21)]
    records.insert(10, (10, {"eval/loss": 0.6, "eval/rewards/margins": 0.45}))
    assert fired(monitor, records) == []


def test_accuracy_near_one_early_fires_once_and_only_early():
    monitor = SymptomMonitor(total_steps=100)
    assert fired(monitor, [train(5, rewards__accuracies=0.99), train(6, rewards__accuracies=1.0)]) == [("early_accuracy", 5)]
    late = SymptomMonitor(total_steps=100)
    assert fired(late, [train(11, rewards__accuracies=1.0)]) == []  # past the first 10%: not a red flag
    assert fired(SymptomMonitor(100), [train(10, rewards__accuracies=0.98)]) == []  # at the threshold, not above it


def test_rejected_collapse_absolute_and_per_token():
    assert fired(SymptomMonitor(50), [train(20, logps__rejected=-199.0), train(21, logps__rejected=-201.0)]) == [("rejected_collapse", 21)]
    assert fired(SymptomMonitor(50), [train(20, logps__rejected=-90.0, logps__rejected_per_token=-6.5)]) == [("rejected_collapse", 20)]
    assert fired(SymptomMonitor(50), [train(20, logps__rejected=-90.0, logps__rejected_per_token=-5.9)]) == []


def test_flat_margins_after_a_quarter_of_the_run():
    records = [train(s, rewards__margins=0.001 * s) for s in (2, 4, 6, 8, 10)]
    # total 40 steps: a quarter is step 10, and by then the margin moved 0.008 < 0.02
    assert fired(SymptomMonitor(40), records) == [("flat_margins", 10)]
    moving = [train(s, rewards__margins=0.01 * s) for s in (2, 4, 6, 8, 10)]  # moved 0.08
    assert fired(SymptomMonitor(40), moving) == []
    assert fired(SymptomMonitor(100), records) == []  # only 10% of the run: too early to tell


def test_chosen_reward_falling_over_consecutive_logs():
    falling = [train(s, rewards__chosen=v) for s, v in [(1, 0.1), (2, 0.0), (3, -0.1), (4, -0.2)]]
    assert fired(SymptomMonitor(100), falling) == [("chosen_falling", 4)]
    wobbling = [train(s, rewards__chosen=v) for s, v in [(1, 0.1), (2, -0.1), (3, -0.05), (4, -0.2)]]
    assert fired(SymptomMonitor(100), wobbling) == []
    still_positive = [train(s, rewards__chosen=v) for s, v in [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]]
    assert fired(SymptomMonitor(100), still_positive) == []


def test_eval_margin_not_tracking_train_margin():
    records = [train(10, rewards__margins=2.0), (10, {"eval/loss": 0.7, "eval/rewards/margins": 0.9})]
    assert fired(SymptomMonitor(100), records) == [("eval_divergence", 10)]
    tracking = [train(10, rewards__margins=2.0), (10, {"eval/loss": 0.5, "eval/rewards/margins": 1.1})]
    assert fired(SymptomMonitor(100), tracking) == []


def test_nonfinite_loss_including_as_logged_to_json():
    assert fired(SymptomMonitor(10), [train(1, loss=float("nan"))]) == [("nonfinite_loss", 1)]
    assert fired(SymptomMonitor(10), [(2, {"eval/loss": "inf"})]) == [("nonfinite_loss", 2)]


def test_thresholds_are_configurable():
    lenient = SymptomThresholds(rejected_logps_floor=-500, early_accuracy=0.999)
    assert fired(SymptomMonitor(100, lenient), [train(1, rewards__accuracies=0.99, logps__rejected=-300.0)]) == []
    with pytest.raises(ValueError):
        SymptomThresholds(early_accuracy=1.5)


def test_replayed_reports_are_not_repeated():
    monitor = SymptomMonitor(100)
    assert fired(monitor, [(3, {"symptom": "early_accuracy", "message": "m", "advice": "a"})]) == []
    assert fired(monitor, [train(4, rewards__accuracies=1.0)]) == []


def test_training_run_reports_symptoms_to_console_and_metrics(tiny_model_dir, pairs_file, tmp_path, capsys):
    from alignkit.config import DPOConfig, load_config
    from alignkit.train.dpo import train_dpo
    from alignkit.train.metrics_log import read_metrics

    out = tmp_path / "run"
    config = load_config(DPOConfig, None, [
        "--model", str(tiny_model_dir), "--train_data", str(pairs_file), "--output_dir", str(out), "--per_device_train_batch_size", "2",
        "--learning_rate", "1e-3", "--logging_steps", "1", "--max_length", "64", "--max_prompt_length", "32", "--disable_tqdm",
        "--report_to", "none", "--eval_split", "0", "--max_steps", "3",
        # a floor every rejected answer is below: the collapse rule must fire at the first log, once
        "--symptom_thresholds", "{rejected_logps_floor: -0.001}"])
    train_dpo(config)
    records = read_metrics(out)
    reports = [r for r in records if "symptom" in r]
    assert [(r["step"], r["symptom"]) for r in reports] == [(1, "rejected_collapse")]
    assert "raise beta" in reports[0]["advice"]
    assert "alignkit: warning: step 1: logps/rejected fell to" in capsys.readouterr().err
    assert all("loss" in r for r in records if "symptom" not in r)
    silenced = config.model_copy(update={"symptom_warnings": False, "output_dir": str(tmp_path / "quiet")})
    train_dpo(silenced)
    assert not any("symptom" in r for r in read_metrics(tmp_path / "quiet"))
    assert json.loads(json.dumps(reports[0]))["message"]
