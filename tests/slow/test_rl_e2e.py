"""PPO and GRPO on the embedded model with the shipped example configs, cut short: the mean reward
(correct and concise) on held-out prompts must rise while the KL to the reference stays bounded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SHORT = [
    "--max_steps",
    "8",
    "--eval_steps",
    "8",
    "--eval_max_prompts",
    "16",
    "--learning_rate",
    "2e-4",
    "--max_new_tokens",
    "40",
    "--disable_tqdm",
]


@pytest.mark.parametrize("command", ["grpo", "ppo"])
def test_reward_rises_on_held_out_prompts_with_bounded_kl(command, tmp_path):
    out = tmp_path / command
    proc = subprocess.run(
        [sys.executable, "-m", "alignkit", command, f"examples/{command}.yaml", "--output_dir", str(out), *SHORT],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/reward/score" in r]
    assert [r["step"] for r in evals] == [0, 8]
    before, after = evals[0], evals[-1]
    assert after["eval/reward/score"] > before["eval/reward/score"] + 0.1
    assert after["eval/response_words"] < before["eval/response_words"]  # concise answers are part of the reward
    train = [r for r in records if "objective/kl" in r]
    assert (
        len(train) == 8 and max(r["objective/kl"] for r in train) < 10.0
    )  # nats per response: still near the reference
    assert (out / "final" / "adapter_config.json").is_file() and (out / "samples.jsonl").is_file()
