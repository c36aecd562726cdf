"""Live symptom warnings: each rule triggered on purpose by a metric stream, none on a healthy one,
once per run, replayed on resume, and written by a real training run."""

import json

import pytest

from alignkit.configs import SymptomThresholds
from alignkit.diagnose.symptoms import ADVICE, SymptomMonitor


def train(step, **values):
    return step, {k.replace("__", "/"): v for k, v in values.items()}


def fired(monitor, records):
    return [(s.name, s.step) for step, m in records for s in monitor.observe(step, m)]


def healthy(step):
    # margins grow, accuracy climbs slowly, chosen reward rises, rejected log-probs fall gently
    # (from a low start: long answers)
    return train(
        step,
        loss=0.69 - 0.01 * step,
        rewards__accuracies=min(0.5 + 0.02 * step, 0.9),
        rewards__margins=0.05 * step,
        rewards__chosen=0.01 * step,
        logps__rejected=-800.0 - step,
        logps__rejected_per_token=-7.0 - 0.01 * step,
        logps__rejected_vs_ref_per_token=-0.02 * step,
    )


def symptom_run_args(model_dir, data, out, lr: str) -> list[str]:
    """Three epochs of full-batch-4 DPO on the tiny model, logged every step (the symptom runs' settings)."""
    return [
        *("--model", str(model_dir), "--train_data", str(data), "--output_dir", str(out)),
        *("--per_device_train_batch_size", "4", "--learning_rate", lr, "--logging_steps", "1"),
        *("--max_length", "64", "--disable_tqdm", "--report_to", "none", "--eval_split", "0"),
        *("--num_train_epochs", "3", "--preflight", "false"),
    ]


def test_a_healthy_run_raises_nothing():
    monitor = SymptomMonitor(total_steps=20)
    records = [healthy(s) for s in range(1, 21)]
    records.insert(10, (10, {"eval/loss": 0.6, "eval/rewards/margins": 0.45}))
    assert fired(monitor, records) == []


def test_accuracy_near_one_early_fires_once_and_only_early():
    monitor = SymptomMonitor(total_steps=100)
    early = [
        train(5, rewards__accuracies=0.99, rewards__margins=0.5),
        train(6, rewards__accuracies=1.0, rewards__margins=0.8),
    ]
    assert fired(monitor, early) == [("early_accuracy", 5)]
    late = SymptomMonitor(total_steps=100)
    assert (
        fired(late, [train(11, rewards__accuracies=1.0, rewards__margins=2.0)]) == []
    )  # past the first 10%: not a red flag
    assert (
        fired(SymptomMonitor(100), [train(10, rewards__accuracies=0.98, rewards__margins=2.0)]) == []
    )  # at the threshold, not above it
    assert (
        fired(SymptomMonitor(100), [train(3, rewards__accuracies=1.0, rewards__margins=0.01)]) == []
    )  # a tiny consistent margin: nothing learned too fast
    assert fired(SymptomMonitor(100), [train(3, rewards__accuracies=1.0)]) == []  # no margin logged: no evidence


def test_rejected_collapse_is_a_fall_relative_to_the_reference():
    assert (
        fired(SymptomMonitor(50), [train(1, logps__rejected=-809.9, logps__rejected_vs_ref_per_token=0.0)]) == []
    )  # long answers, unchanged: no alarm
    drops = [
        train(20, logps__rejected=-90.0, logps__rejected_vs_ref_per_token=-1.4),
        train(21, logps__rejected=-95.0, logps__rejected_vs_ref_per_token=-1.6),
    ]
    assert fired(SymptomMonitor(50), drops) == [("rejected_collapse", 21)]
    monitor = SymptomMonitor(50)
    message = [s.message for step, m in drops for s in monitor.observe(step, m)][0]
    assert message.startswith("rejected answers fell 1.60 nats per token below the reference (threshold 1.5;")
    assert (
        fired(SymptomMonitor(50), [train(20, logps__rejected=-400.0)]) == []
    )  # no reference (SimPO/ORPO): nothing to compare with


def test_flat_margins_after_a_quarter_of_the_run():
    records = [train(s, rewards__margins=0.001 * s) for s in (2, 4, 6, 8, 10)]
    # total 40 steps: a quarter is step 10, and by then the margin moved 0.008 < 0.02
    assert fired(SymptomMonitor(40), records) == [("flat_margins", 10)]
    moving = [train(s, rewards__margins=0.01 * s) for s in (2, 4, 6, 8, 10)]  # moved 0.08
    assert fired(SymptomMonitor(40), moving) == []
    assert fired(SymptomMonitor(100), records) == []  # only 10% of the run: too early to tell
    stuck = [train(s, rewards__margins=0.5 + 0.001 * s) for s in (2, 4, 6, 8, 10)]  # flat, away from 0
    assert fired(SymptomMonitor(40), stuck) == [("flat_margins", 10)]


def test_chosen_reward_falling_over_consecutive_logs():
    falling = [train(s, rewards__chosen=v) for s, v in [(1, 0.1), (2, 0.0), (3, -0.1), (4, -0.2)]]
    assert fired(SymptomMonitor(100), falling) == [("chosen_falling", 4)]
    wobbling = [train(s, rewards__chosen=v) for s, v in [(1, 0.1), (2, -0.1), (3, -0.05), (4, -0.2)]]
    assert fired(SymptomMonitor(100), wobbling) == []
    still_positive = [train(s, rewards__chosen=v) for s, v in [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]]
    assert fired(SymptomMonitor(100), still_positive) == []
    below_zero_last = [train(s, rewards__chosen=v) for s, v in [(1, 0.2), (2, 0.1), (3, 0.0), (4, -0.1)]]
    monitor = SymptomMonitor(100)
    found = [s for step, m in below_zero_last for s in monitor.observe(step, m)]
    assert [(s.name, s.step, s.message) for s in found] == [
        ("chosen_falling", 4, "rewards/chosen fell over 3 logs in a row, to -0.100.")
    ]
    # only the last 3 logs count (an earlier rise does not hide the fall); a log that holds still breaks the fall
    after_a_rise = [train(s, rewards__chosen=v) for s, v in [(1, -0.5), (2, 0.1), (3, 0.0), (4, -0.1), (5, -0.2)]]
    assert fired(SymptomMonitor(100), after_a_rise) == [("chosen_falling", 5)]
    holding = [train(s, rewards__chosen=v) for s, v in [(1, 0.0), (2, -0.1), (3, -0.1), (4, -0.2)]]
    assert fired(SymptomMonitor(100), holding) == []


def test_eval_margin_not_tracking_train_margin():
    records = [train(10, rewards__margins=2.0), (10, {"eval/loss": 0.7, "eval/rewards/margins": 0.9})]
    assert fired(SymptomMonitor(100), records) == [("eval_divergence", 10)]
    tracking = [train(10, rewards__margins=2.0), (10, {"eval/loss": 0.5, "eval/rewards/margins": 1.1})]
    assert fired(SymptomMonitor(100), tracking) == []


def test_an_eval_log_without_margins_is_checked_for_its_loss_only():
    records = [train(10, rewards__margins=2.0), (10, {"eval/loss": 0.7})]  # SFT-like eval: no margins
    assert fired(SymptomMonitor(100), records) == []


def test_nonfinite_loss_including_as_logged_to_json():
    assert fired(SymptomMonitor(10), [train(1, loss=float("nan"))]) == [("nonfinite_loss", 1)]
    assert fired(SymptomMonitor(10), [(2, {"eval/loss": "inf"})]) == [("nonfinite_loss", 2)]


def test_thresholds_are_configurable():
    lenient = SymptomThresholds(rejected_drop_per_token=3.0, early_accuracy=0.999)
    assert (
        fired(
            SymptomMonitor(100, lenient),
            [train(1, rewards__accuracies=0.99, rewards__margins=1.0, logps__rejected_vs_ref_per_token=-2.0)],
        )
        == []
    )
    assert fired(
        SymptomMonitor(100),
        [train(1, rewards__accuracies=0.99, rewards__margins=1.0, logps__rejected_vs_ref_per_token=-2.0)],
    ) == [("early_accuracy", 1), ("rejected_collapse", 1)]
    with pytest.raises(ValueError):
        SymptomThresholds(early_accuracy=1.5)


def test_replayed_reports_are_not_repeated():
    monitor = SymptomMonitor(100)
    assert fired(monitor, [(3, {"symptom": "early_accuracy", "message": "m", "advice": "a"})]) == []
    assert fired(monitor, [train(4, rewards__accuracies=1.0, rewards__margins=1.0)]) == []
    symptom = monitor.observe(5, {"loss": float("inf")})[0]  # the line a report writes, and how it prints
    assert symptom.record() == {
        "symptom": "nonfinite_loss",
        "message": "the training loss is inf.",
        "advice": ADVICE["nonfinite_loss"],
    }
    assert str(symptom) == f"step 5: the training loss is inf. {ADVICE['nonfinite_loss']}"


def test_real_runs_healthy_is_silent_too_high_a_learning_rate_is_not(tiny_model_dir, tmp_path, capsys):
    """Both sides on a real (tiny) model: 40 pairs, 3 epochs. At lr 1e-3 the model learns the pairs
    gently and nothing fires; at lr 1e-2 it memorises them and drives rejected answers far below the
    reference, and the warnings say so (never at step 1, where the policy equals the reference)."""
    from conftest import write_pairs

    from alignkit.configs import DPOConfig, load_config
    from alignkit.train.dpo import train_dpo
    from alignkit.train.metrics_log import read_metrics

    pairs = write_pairs(tmp_path / "pairs.jsonl", 40)

    def run(lr: str, name: str, *extra: str) -> list[dict]:
        config = load_config(
            DPOConfig,
            None,
            [
                *symptom_run_args(tiny_model_dir, pairs, tmp_path / name, lr),
                "--precompute_ref_log_probs",
                "false",
                *extra,
            ],
        )  # a live reference: exactly 0 at step 1
        train_dpo(config)
        return read_metrics(tmp_path / name)

    healthy_records = run("1e-3", "healthy")
    assert (
        healthy_records[0]["logps/rejected_vs_ref_per_token"] == 0.0 and healthy_records[0]["logps/rejected"] < -150
    )  # low from the start
    assert not any("symptom" in r for r in healthy_records)
    capsys.readouterr()
    records = run("1e-2", "too-fast")
    reports = {r["symptom"]: r for r in records if "symptom" in r}
    assert set(reports) == {"early_accuracy", "rejected_collapse"} and all(r["step"] > 1 for r in reports.values())
    assert "raise beta" in reports["rejected_collapse"]["advice"]
    assert "nats per token below the reference" in capsys.readouterr().err
    assert not any("symptom" in r for r in run("1e-2", "quiet", "--symptom_warnings", "false"))
    assert json.loads(json.dumps(reports["rejected_collapse"]))["message"]


def test_each_remaining_rule_fires_on_a_real_run_that_goes_wrong_its_way(tiny_model_dir, tmp_path):
    """flat_margins: a learning rate too small to learn anything; eval_divergence: held-out pairs
    whose preference is the opposite of the training pairs'; chosen_falling: near-identical chosen
    and rejected answers (DPO pushes both down). The healthy run above stays silent on all three."""
    from conftest import write_pairs

    from alignkit.configs import DPOConfig, load_config
    from alignkit.train.dpo import train_dpo
    from alignkit.train.metrics_log import read_metrics

    pairs = write_pairs(tmp_path / "pairs.jsonl", 40)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text(
        "".join(
            json.dumps({"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n"
            for r in rows[:12]
        )
    )
    similar = tmp_path / "similar.jsonl"
    similar.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": r["prompt"],
                    "chosen": f"Let me think, step by step: the answer is {i % 7 + i % 5 + 3}.",
                    "rejected": f"Let me think, step by step: the answer is {i % 7 + i % 5 + 4}.",
                }
            )
            + "\n"
            for i, r in enumerate(rows)
        )
    )

    def symptoms(name: str, data, lr: str, *extra: str) -> dict[str, int]:
        config = load_config(
            DPOConfig,
            None,
            [
                *symptom_run_args(tiny_model_dir, data, tmp_path / name, lr),
                *extra,
            ],
        )
        train_dpo(config)
        return {r["symptom"]: r["step"] for r in read_metrics(tmp_path / name) if "symptom" in r}

    assert symptoms("flat", pairs, "1e-8") == {"flat_margins": 8}  # a quarter of 30 steps, margins never moved
    diverged = symptoms("diverged", pairs, "1e-2", "--eval_data", str(swapped), "--eval_steps", "5")
    assert diverged["eval_divergence"] == 5
    assert "eval_divergence" not in symptoms("tracking", pairs, "1e-3", "--eval_data", str(pairs), "--eval_steps", "5")
    falling = symptoms("falling", similar, "1e-2")
    assert "chosen_falling" in falling and falling["chosen_falling"] > 10
