"""`alignkit pairs` on the embedded model with each method, and `alignkit dpo` training on the result."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROMPTS = "examples/data/prompts_arithmetic.jsonl"


def run_cli(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "alignkit", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def train_on(pairs: Path, out: Path) -> list[dict]:
    proc = run_cli(
        "dpo",
        "examples/dpo_lora.yaml",
        "--train_data",
        str(pairs),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--eval_split",
        "0",
        "--disable_tqdm",
        "--gradient_checkpointing",
        "false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_system_prompt_contrast_then_dpo(tmp_path):
    out = tmp_path / "sp.jsonl"
    proc = run_cli(
        "pairs", "examples/pairs/system_prompt.yaml", "--output", str(out), "--max_prompts", "10", "--disable_tqdm"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pairs, summary = read_pairs(out), json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["kept"] == len(pairs) >= 3 and summary["kept"] + sum(summary["dropped"].values()) == 10
    for p in pairs:  # the verifier kept only pairs it agrees with
        assert p["provenance"]["scores"]["chosen"] > p["provenance"]["scores"]["rejected"]
        assert (
            p["provenance"]["chosen_system_prompt"] == "good[0]"
            and p["provenance"]["rejected_system_prompt"] == "bad[0]"
        )
    assert [r["step"] for r in train_on(out, tmp_path / "dpo") if "loss" in r][-1] == 2


def test_sample_rank_by_verifier_then_dpo(tmp_path):
    out = tmp_path / "sr.jsonl"
    proc = run_cli(
        "pairs",
        "examples/pairs/sample_rank_verifier.yaml",
        "--output",
        str(out),
        "--max_prompts",
        "8",
        "--num_samples",
        "3",
        "--disable_tqdm",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pairs = read_pairs(out)
    assert len(pairs) >= 4
    for p in pairs:
        scores = p["provenance"]["scores"]
        assert (
            scores[p["provenance"]["chosen_source"]]
            == max(scores.values())
            > scores[p["provenance"]["rejected_source"]]
            == min(scores.values())
        )
    train_on(out, tmp_path / "dpo")


def test_sample_rank_by_a_local_judge_served_by_alignkit(tmp_path):
    from alignkit.commands.pairs import build_pairs
    from alignkit.commands.serve import serving
    from alignkit.configs import PairsConfig, load_config

    out = tmp_path / "judge.jsonl"
    with serving("embedded") as url:
        config = load_config(
            PairsConfig,
            REPO / "examples/pairs/sample_rank_judge.yaml",
            {
                "prompts": str(REPO / PROMPTS),
                "output": str(out),
                "judge_base_url": url,
                "max_prompts": 6,
                "disable_tqdm": True,
            },
        )
        result = build_pairs(config)
    assert (
        result.summary["judge_comparisons"] >= 6
        and result.summary["requests"] == 2 * result.summary["judge_comparisons"]
    )
    assert result.summary["kept"] == len(result.rows) >= 3
    for p in result.rows:
        assert p["provenance"]["scorer"] == "judge:embedded:pairwise" and p["provenance"]["verdicts"]
    train_on(out, tmp_path / "dpo")
