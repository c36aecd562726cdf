"""Two CPU processes (accelerate launch, gloo) against one with the same global batch: the same loss
curve and final weights, metrics and checkpoints written once, and resume across both."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.train.metrics_log import read_metrics
from conftest import write_pairs

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], processes: int) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)] if processes > 1 else [sys.executable]
    return subprocess.run([*launch, "-m", "alignkit", "dpo", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("ddp")
    data = write_pairs(root / "pairs.jsonl", 16)
    common = ["--model", str(tiny_model_dir), "--train_data", str(data), "--disable_tqdm", "--report_to", "none", "--max_length", "64",
              "--max_prompt_length", "32", "--learning_rate", "1e-3", "--logging_steps", "1", "--max_steps", "4", "--eval_split", "0.25",
              "--preflight", "false", "--save_steps", "2", "--eval_steps", "2"]
    one = run(common + ["--output_dir", str(root / "one"), "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2"], 1)
    assert one.returncode == 0, one.stderr[-2000:]
    two_args = common + ["--output_dir", str(root / "two"), "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "1"]
    two = run(two_args, 2)
    assert two.returncode == 0, two.stderr[-2000:]
    return root, two_args


def test_two_processes_follow_the_single_process_run(runs):
    root, _ = runs
    single, double = read_metrics(root / "one"), read_metrics(root / "two")
    assert [(r["step"], sorted(r)) for r in single] == [(r["step"], sorted(r)) for r in double]  # logged once, same records
    for a, b in zip(single, double):
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (a["step"], key)
    wa, wb = load_file(str(root / "one" / "checkpoint-4" / "trainable.safetensors")), load_file(str(root / "two" / "checkpoint-4" / "trainable.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert sorted(p.name for p in (root / "two").iterdir()) == ["checkpoint-2", "checkpoint-4", "config.yaml", "final", "metrics.jsonl"]


def test_resume_across_two_processes(runs):
    root, args = runs
    resumed = root / "resumed"
    shutil.copytree(root / "two", resumed)
    shutil.rmtree(resumed / "checkpoint-4")
    shutil.rmtree(resumed / "final")
    result = run([a if a != str(root / "two") else str(resumed) for a in args] + ["--resume"], 2)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(resumed) == read_metrics(root / "two")
    wa, wb = load_file(str(root / "two" / "checkpoint-4" / "trainable.safetensors")), load_file(str(resumed / "checkpoint-4" / "trainable.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
