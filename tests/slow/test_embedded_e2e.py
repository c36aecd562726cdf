"""End-to-end runs of the CLI on the embedded model (SmolLM2-135M-Instruct). Marked slow; CI runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRL_KEYS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
}


def run_cli(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_dpo_full_finetune_on_a_users_jsonl(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "dpo"
    proc = run_cli(
        "dpo",
        "examples/dpo.yaml",
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--eval_steps",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = metrics(out)
    first = next(r for r in records if "loss" in r)
    # policy == reference at step 1: the DPO part is log 2 (examples/dpo.yaml adds rpo_alpha 1.0 x the NLL of chosen)
    assert first["loss"] - first["nll_loss"] == pytest.approx(0.693147, abs=1e-4) and first["rewards/margins"] == 0
    assert first["logps/rejected"] < first["logps/chosen"] < 0
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.vocab_size == 49152 and tokenizer.chat_template


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The real demo, default settings (about 5 minutes with the model's answers cached); later tests evaluate its run
    directory."""
    out = tmp_path_factory.mktemp("full") / "demo"
    proc = run_cli("demo", "--output_dir", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_full_demo_output_and_run_directory(full_demo):
    out, proc = full_demo
    for text in (
        "before (reference)",
        "after (aligned)",
        "Held-out set (80 prompts in phrasings, shapes and facts never trained on",
        "probe: facts",
        "win-rate vs the reference",
        "Final DPO metrics",
        str(out / "final"),
        "Aligned: it beats the reference",
    ):
        assert text in proc.stdout, text
    assert "training:" in proc.stderr  # the progress bar
    assert (out / "final" / "adapter_config.json").is_file() and (out / "config.yaml").is_file()
    records = metrics(out)
    train = [r for r in records if "loss" in r]
    steps = [r["step"] for r in train]  # logging_steps 2, plus the last step
    assert steps[0] == 2 and steps == sorted(set(steps)) and all(step % 2 == 0 for step in steps[:-1])
    assert TRL_KEYS <= set(train[0]) and any("eval/loss" in r for r in records)
    rows = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert rows and all(r["chosen"] != r["rejected"] and "provenance" in r for r in rows)
    again = run_cli("demo", "--output_dir", str(out), "--max_steps", "1")  # refuses to clobber the finished run
    assert again.returncode == 2 and "already exists" in again.stderr


def test_full_demo_beats_the_reference(full_demo):
    """On held-out phrasings, question shapes and facts: better answers, calibrated declines, shorter
    replies, and nothing lost (probes, general knowledge, no looping or runaway replies)."""
    full_demo = full_demo[0]
    results = json.loads((full_demo / "demo_results.json").read_text())
    before, after = results["before"], results["after"]
    assert after["accuracy"] >= before["accuracy"] + 0.1
    assert after["not_sure_rate"] >= 0.5 and after["false_not_sure_rate"] <= 0.05
    assert after["knowledge_accuracy"] >= before["knowledge_accuracy"] - 0.02
    assert after["mean_words"] < 0.4 * before["mean_words"]
    assert after["degenerate"] == 0 and after["runaway"] <= before["runaway"]
    assert results["problems"] == [] and not any(p["regressed"] for p in results["probes"])
    assert results["win_rate"]["win_rate"] >= 0.65 and results["win_rate"]["wins"] > 5 * results["win_rate"]["losses"]
    assert results["eval_metrics"]["eval/rewards/accuracies"] >= 0.8
    rows = [json.loads(line) for line in (full_demo / "demo_answers.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"arithmetic", "unanswerable", "knowledge"} and len(rows) == 80


def test_symptoms_silent_on_the_demo_and_loud_on_a_run_that_goes_wrong(full_demo, tmp_path):
    """No symptom warning on the demo's well-behaved run; a learning rate of 1e-3 on 40 pairs (full
    fine-tuning, ten times the usual top: the doctor would stop it, so --preflight false) sets them off."""
    assert not any("symptom" in r for r in metrics(full_demo[0]))
    out = tmp_path / "too-fast"
    proc = run_cli(
        "dpo",
        "examples/dpo.yaml",
        "--output_dir",
        str(out),
        "--learning_rate",
        "1e-3",
        "--preflight",
        "false",
        "--gradient_checkpointing",
        "false",
        "--eval_split",
        "0",
        "--logging_steps",
        "1",
        "--max_steps",
        "3",
        "--gradient_accumulation_steps",
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fired = {r["symptom"]: r["step"] for r in metrics(out) if "symptom" in r}
    assert "rejected_collapse" in fired and min(fired.values()) > 1, fired
    assert "nats per token below the reference" in proc.stderr


def test_eval_and_report_on_the_demo_run(full_demo):
    """alignkit eval on the demo's run directory agrees with the demo's own before/after, then a report."""
    full_demo = full_demo[0]
    proc = run_cli(
        "eval",
        "--model",
        str(full_demo),
        "--prompts",
        str(full_demo / "demo_answers.jsonl"),
        "--max_new_tokens",
        "48",
        "--max_prompts",
        "48",
        "--probe_size",
        "8",
        "--disable_tqdm",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((full_demo / "eval" / "eval_results.json").read_text())
    win = results["win_rate"]
    assert win["n"] == 48 and win["judge"] == "verifier" and results["shares_weights"]
    assert win["wins"] > 2 * win["losses"] and win["ci_low"] > 0.5  # the demo's gains, seen by an independent command
    accuracy = results["reward_accuracy"]  # on the demo's held-out pairs (the run's eval_data)
    assert accuracy["pairs"] == 48 and accuracy["accuracy"] >= 0.8 and accuracy["margin"] > 0
    probes = {p["probe"]: p for p in results["probes"]}
    assert set(probes) == {"perplexity", "arithmetic", "facts"} and probes["facts"]["n"] == 8
    assert results["regressions"] == []  # eval agrees with the demo: nothing regressed
    assert probes["perplexity"]["after"] < 2 * probes["perplexity"]["before"]  # general text is still modelled
    assert len((full_demo / "eval" / "winrate.jsonl").read_text().splitlines()) == 48
    proc = run_cli("report", str(full_demo))
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (full_demo / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Win-rate vs reference" in page and "rewards/margins" in page


def test_doctor_passes_the_shipped_lora_config(tmp_path):
    proc = run_cli("doctor", "examples/dpo_lora.yaml", "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 failed" in proc.stderr
    starting = next(line for line in proc.stderr.splitlines() if "starting model" in line)
    assert "pass" in starting  # SmolLM2-135M-Instruct answers the probe like an assistant
