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


def test_the_reference_lists_every_file_and_metric_each_method_writes(tiny_model_dir, prompts, pairs_file, tmp_path):
    """Each method, 2 steps on the tiny model: the files its run holds are in RUN_FILES, and the metrics it logs
    are exactly its METHOD_METRICS (plus the shared ones), each described in METRICS: the per-method pages of
    the docs say what really happens."""
    import json

    from conftest import tiny_run_args

    from alignkit.cli import COMMANDS, _load
    from alignkit.configs import load_config
    from alignkit.train.metrics_log import read_metrics
    from alignkit.train.run_outputs import METHOD_METRICS, METRICS, RUN_FILES, SHARED_METRICS

    sft_rows = tmp_path / "sft.jsonl"
    sft_rows.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(8)))
    data = {"sft": sft_rows, "ppo": prompts, "grpo": prompts, "rloo": prompts}
    for method, expected in METHOD_METRICS.items():
        out = tmp_path / method
        extra = ["--max_new_tokens", "4"] if method in ("ppo", "grpo", "rloo") else []
        args = tiny_run_args(tiny_model_dir, data.get(method, pairs_file), out, "--max_steps", "2", *extra)
        _load(COMMANDS[method].runner)(load_config(_load(COMMANDS[method].config), None, args))
        written = {
            re.sub(r"checkpoint-\d+", "checkpoint-N", p.name) + ("/" if p.is_dir() else "") for p in out.iterdir()
        }
        assert written <= set(RUN_FILES), (method, written - set(RUN_FILES))
        logged = set()
        for record in read_metrics(out):
            if "symptom" in record:
                continue
            for key in record:
                name = key.removeprefix("eval/")
                logged.add("reward/<term>" if name.startswith("reward/") and name not in METRICS else name)
        assert logged - set(SHARED_METRICS) == set(expected), method
        assert all(name in METRICS for name in logged), method


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


def test_the_shipped_example_data_is_what_the_documented_script_writes(tmp_path):
    """``python examples/make_example_data.py`` (docs/methods.md) rewrites examples/data: run on a copy, it must
    reproduce every shipped file byte for byte (without --retention, which needs the embedded model)."""
    import shutil

    copy = shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shipped = {p.name: p.read_bytes() for p in (ROOT / "examples" / "data").glob("*.jsonl")}
    done = subprocess.run(
        [sys.executable, str(copy / "make_example_data.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-500:]
    written = {p.name: p.read_bytes() for p in (copy / "data").glob("*.jsonl")}
    assert written.keys() == shipped.keys() and all(written[k] == shipped[k] for k in shipped)


def test_the_documented_labelling_and_doctor_commands_run(tmp_path, capsys, monkeypatch):
    """docs/data.md's labelling sequence (without the server) and README's doctor on a shipped example, through
    the CLI's entry point in this process."""
    from alignkit.cli import main

    def alignkit(*args: str) -> str:
        code = main(list(args))
        out = capsys.readouterr()
        assert code == 0, (args, out.err[-800:])
        return out.out + out.err

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.jsonl").write_text((ROOT / "examples" / "data" / "arithmetic_pairs_heldout.jsonl").read_text())
    (tmp_path / "rubric.md").write_text("Prefer the correct, direct answer.\n")
    alignkit("label", "init", "audit", "--rows", "pairs.jsonl", "--overlap", "2", "--rubric", "rubric.md")
    assert "token" in alignkit("label", "add-annotator", "audit", "alice")
    alignkit("label", "add-annotator", "audit", "bob")
    alignkit("label", "stats", "audit")
    alignkit("label", "export", "audit", "--output", "labelled.jsonl")
    assert (tmp_path / "labelled.jsonl").is_file()
    monkeypatch.chdir(ROOT)  # the example's data paths are relative to the repository
    doctor = alignkit("doctor", "examples/dpo_lora.yaml", "--output_dir", str(tmp_path / "run"))
    assert "0 failed" in doctor and "max_length" in doctor


def test_every_repository_file_the_docs_name_exists():
    """A page that names a test, script, example or data file of this repository (``tests/test_x.py``) names
    one that is there: a renamed test left ``docs/gpu.md`` pointing at a file that was gone."""
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = re.compile(
        r"\b((?:tests|benchmarks|examples|docs|src/alignkit)/[\w/.-]*\w\.(?:py|sh|md|yaml|jsonl|json))\b"
    )
    missing = {
        (page.relative_to(ROOT).as_posix(), path)
        for page in pages
        for path in named.findall(page.read_text())
        if not (ROOT / path).exists()
    }
    assert not missing, sorted(missing)
    assert len(pages) > 10
