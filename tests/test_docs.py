"""The docs site builds without a warning from the pages and a reference generated from the code, the
reference lists every file a run writes and every metric it logs, and the commands the docs show that run in
seconds on a CPU are run here."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_without_warnings(tmp_path):
    pytest.importorskip("myst_parser", reason="pip install -e '.[test]' (sphinx, myst-parser)")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path / "html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "html" / "reference" / "commands.html").read_text()
    assert "lora_target_modules" in page and "model_name_or_path" in page and "disable_dropout" in page


def test_the_reference_lists_every_file_and_metric_a_run_writes(tiny_model_dir, prompts, pairs_file, tmp_path):
    from conftest import tiny_run_args

    from alignkit.configs import DPOConfig, GRPOConfig, load_config
    from alignkit.train.dpo import train_dpo
    from alignkit.train.grpo import train_grpo
    from alignkit.train.metrics_log import read_metrics
    from alignkit.train.run_outputs import METRICS, RUN_FILES

    runs = {"dpo": tmp_path / "dpo", "grpo": tmp_path / "grpo"}
    train_dpo(load_config(DPOConfig, None, tiny_run_args(tiny_model_dir, pairs_file, runs["dpo"], "--max_steps", "2")))
    args = tiny_run_args(tiny_model_dir, prompts, runs["grpo"], "--max_steps", "2", "--max_new_tokens", "4")
    train_grpo(load_config(GRPOConfig, None, args))
    for run in runs.values():
        written = {p.name + ("/" if p.is_dir() else "") for p in run.iterdir()}
        written = {re.sub(r"checkpoint-\d+/", "checkpoint-N/", name) for name in written}
        assert written <= set(RUN_FILES), written - set(RUN_FILES)
        for record in read_metrics(run):
            for key in record:
                name = key.removeprefix("eval/")
                name = "reward/<term>" if name.startswith("reward/") and name not in METRICS else name
                assert name in METRICS, key


def test_the_commands_the_docs_show_that_take_seconds_run():
    """``alignkit env`` and every ``alignkit <command> --help`` written in the README or a docs page."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    shown = {"alignkit env"}
    for page in pages:
        shown |= {m.group(0).strip() for m in re.finditer(r"alignkit [a-z]+ --help", page.read_text())}
    assert len(shown) >= 2
    for command in sorted(shown):
        done = subprocess.run(
            [sys.executable, "-m", "alignkit", *command.split()[1:]], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and done.stdout.strip(), (command, done.stderr[-500:])
