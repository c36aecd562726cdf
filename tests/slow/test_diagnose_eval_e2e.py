"""doctor, eval and report on the embedded model: the pre-flight checks pass on the shipped LoRA config,
and a short LoRA DPO run on the shipped arithmetic pairs is measurably better than its reference."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_doctor_passes_the_shipped_lora_config_on_the_embedded_model(tmp_path):
    proc = run_cli("doctor", "examples/dpo_lora.yaml", "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 failed" in proc.stderr
    starting = next(line for line in proc.stderr.splitlines() if "starting model" in line)
    assert "pass" in starting  # SmolLM2-135M-Instruct answers the probe like an assistant


def test_dpo_then_eval_then_report(tmp_path):
    out = tmp_path / "dpo"
    proc = run_cli("dpo", "examples/dpo_lora.yaml", "--train_data", "examples/data/arithmetic_pairs_train.jsonl",
                   "--eval_data", "examples/data/arithmetic_pairs_heldout.jsonl", "--output_dir", str(out), "--max_steps", "12",
                   "--per_device_train_batch_size", "8", "--gradient_checkpointing", "false", "--eval_steps", "6", "--disable_tqdm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("eval", "examples/eval.yaml", "--model", str(out), "--max_prompts", "24", "--probe_size", "12", "--disable_tqdm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval" / "eval_results.json").read_text())
    win = results["win_rate"]
    assert win["n"] == 24 and win["judge"] == "verifier" and win["wins"] > win["losses"]
    accuracy = results["reward_accuracy"]
    assert accuracy["pairs"] == 24 and accuracy["accuracy"] >= 0.8 and accuracy["margin"] > 0
    probes = {p["probe"]: p for p in results["probes"]}
    assert set(probes) == {"perplexity", "arithmetic", "facts"}
    assert probes["perplexity"]["after"] < 2 * probes["perplexity"]["before"]  # general text is still modelled
    assert 0.0 <= probes["facts"]["before"] <= 1.0 and probes["facts"]["n"] == 12
    assert len((out / "eval" / "winrate.jsonl").read_text().splitlines()) == 24
    proc = run_cli("report", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Win-rate vs reference" in page and "rewards/margins" in page
