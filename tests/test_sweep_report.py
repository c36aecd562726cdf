"""`alignkit sweep` on a tiny model (two betas, shared reference work, a recommendation) and
`alignkit report` over the sweep and its runs, rendered in a real headless browser."""

import html
import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import write_pairs

from alignkit.evaluate.sweep import recommend

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def test_recommendation_skips_regressions_and_falls_back_to_reward_accuracy():
    rows = [
        {"beta": 0.05, "win_rate": 0.8, "reward_accuracy": 0.9, "regressions": ["facts"]},
        {"beta": 0.1, "win_rate": 0.7, "reward_accuracy": 0.8, "regressions": []},
        {"beta": 0.5, "win_rate": 0.6, "reward_accuracy": 0.85, "regressions": []},
    ]
    assert recommend(rows)[0] == 0.1
    no_judge = [dict(r, win_rate=None) for r in rows]
    assert recommend(no_judge)[0] == 0.5 and "reward accuracy" in recommend(no_judge)[1]
    assert recommend([dict(r, regressions=["perplexity"]) for r in rows])[0] is None


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, tiny_model_dir):
    from alignkit.configs import SweepConfig, load_config
    from alignkit.evaluate.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    pairs = write_pairs(root / "pairs.jsonl", 24)
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"What is {a} + {a}?", "answer": 2 * a}) + "\n" for a in range(1, 5))
    )
    before = os.environ.get("ALIGNKIT_CACHE")
    os.environ["ALIGNKIT_CACHE"] = str(root / "cache")
    config = load_config(
        SweepConfig,
        None,
        [
            "--model",
            str(tiny_model_dir),
            "--train_data",
            str(pairs),
            "--output_dir",
            str(root / "sweep"),
            "--beta",
            "0.1,0.5",
            "--use_peft",
            "--lora_r",
            "4",
            "--learning_rate",
            "5e-3",
            "--preflight",
            "false",
            "--max_steps",
            "3",
            "--logging_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--max_length",
            "64",
            "--max_prompt_length",
            "32",
            "--eval_split",
            "0.25",
            "--disable_tqdm",
            "--report_to",
            "none",
            "--symptom_thresholds",
            "{rejected_drop_per_token: 0.00001}",
            "--eval",
            json.dumps(
                {
                    "prompts": str(prompts),
                    "max_new_tokens": 6,
                    "probes": ["facts"],
                    "probe_size": 2,
                    "disable_tqdm": True,
                }
            ),
        ],
    )
    result = run_sweep(config)
    os.environ["ALIGNKIT_CACHE"] = before  # the session's (conftest.alignkit_cache)
    return root, result


def test_sweep_trains_and_evaluates_each_beta_reusing_reference_work(sweep_dir):
    root, result = sweep_dir
    sweep = root / "sweep"
    assert [r["beta"] for r in result.rows] == [0.1, 0.5]
    for beta in ("0.1", "0.5"):
        run = sweep / f"beta-{beta}"
        assert (run / "final" / "adapter_config.json").is_file()
        saved = json.loads((run / "eval" / "eval_results.json").read_text())
        assert saved["win_rate"]["n"] == 4 and saved["reward_accuracy"]["pairs"] == 6  # the run's own eval_split
        assert f"beta {float(beta):g}" in saved["reward_accuracy"]["kind"]
    assert (
        len(list((root / "cache" / "ref_logps").glob("*.safetensors"))) == 2
    )  # train + eval reference log-probs, computed once
    # the reference answers were generated once and reused: identical in both runs' records
    first, second = [
        [
            json.loads(line)["reference"]
            for line in (sweep / f"beta-{b}" / "eval" / "winrate.jsonl").read_text().splitlines()
        ]
        for b in ("0.1", "0.5")
    ]
    assert first == second
    summary = json.loads((sweep / "sweep.json").read_text())
    assert summary["recommended_beta"] == result.recommended and result.recommended in (0.1, 0.5)
    assert (sweep / "sweep.png").stat().st_size > 5000


def test_sweep_resume_reuses_finished_runs(sweep_dir, capsys):
    from alignkit.configs import SweepConfig
    from alignkit.evaluate.sweep import run_sweep

    root, result = sweep_dir
    config = SweepConfig(
        model="unused-because-finished",
        train_data=str(root / "pairs.jsonl"),
        output_dir=str(root / "sweep"),
        beta=[0.1, 0.5],
        resume=True,
    )
    again = run_sweep(config)
    assert again.rows == result.rows and capsys.readouterr().err.count("is finished; reusing its results") == 2


def find_browser():
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail(
            "no headless browser found; .ci/run installs chromium-headless-shell (bash tests/install_browser.sh)"
        )
    pytest.skip("no headless browser (run: bash tests/install_browser.sh)")


CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-check', JSON.stringify({images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    widths: imgs.map(i => i.naturalWidth), headings: [...document.querySelectorAll('h2,h3')].map(h => h.textContent)}));
});</script></body>"""


def test_report_renders_in_a_headless_browser_with_every_image_loaded(sweep_dir, tmp_path):
    from alignkit.cli import main

    root, _ = sweep_dir
    sweep, run = root / "sweep", root / "sweep" / "beta-0.1"
    assert main(["report", str(sweep), str(run), "--output_dir", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained
    assert (
        "Recommended beta" in page
        and "rejected_collapse" in page
        and "Win-rate vs reference" in page
        and "config.yaml" in page
    )
    figures = sorted((tmp_path / "report" / "report_files").glob("*.png"))
    assert len(figures) == page.count("data:image/png;base64,") == markdown.count("](report_files/figure-") >= 4

    checked = tmp_path / "report" / "check.html"
    checked.write_text(page.replace("</body>", CHECK))
    browser = find_browser()
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, dom[:500]
    result = json.loads(html.unescape(found.group(1)))
    assert result["images"] == len(figures) and result["loaded"] == result["images"] and min(result["widths"]) > 100
    assert (
        "Run: sweep" in result["headings"]
        and "Symptom warnings" in result["headings"]
        and "Beta sweep" in result["headings"]
    )


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    from pydantic import ValidationError

    from alignkit.cli import main
    from alignkit.configs import ReportConfig

    with pytest.raises(ValidationError, match="at least 1 item"):  # the Python API: not an IndexError
        ReportConfig(runs=[])

    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "holds no metrics.jsonl" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert main(["report", str(tmp_path / "metrics.jsonl")]) == 1  # a run's file, not its directory
    assert f"{tmp_path / 'metrics.jsonl'} is not a directory" in capsys.readouterr().err


def test_report_reads_rl_runs(tiny_model_dir, tmp_path):
    from conftest import tiny_run_args, write_prompts

    from alignkit.configs import GRPOConfig, ReportConfig, load_config
    from alignkit.report.build import build_report
    from alignkit.train.grpo import train_grpo

    prompts = write_prompts(tmp_path / "prompts.jsonl", n=8)
    out = tmp_path / "grpo"
    args = tiny_run_args(tiny_model_dir, prompts, out, "--max_steps", "2", "--eval_steps", "1")
    train_grpo(load_config(GRPOConfig, None, [*args, "--max_new_tokens", "6", "--rewards", "[{kind: length}]"]))
    build_report(ReportConfig(runs=[str(out)]))
    md = (out / "report.md").read_text()
    assert "2 training logs up to step 2; 2 evaluations." in md  # RL logs loss/total and eval/reward/score
    assert "| reward/score |" in md and "| objective/kl |" in md


def test_report_panels_skip_one_value_and_all_zero_metrics():
    from alignkit.report.plots import metric_series, worth_a_panel

    records = [
        {"step": 1, "loss": 0.7, "nonfinite_steps_skipped": 0},
        {"step": 2, "loss": 0.6, "nonfinite_steps_skipped": 0, "eval/loss": 0.65},
        {"step": 2, "train_runtime": 12.0},
    ]
    kept = {name for name, points in metric_series(records).items() if worth_a_panel(points)}
    assert kept == {"loss"}

    # a NaN or inf logged as text (metrics.jsonl's form) is still a point; other text is not
    series = metric_series([{"step": 1, "loss": "nan", "note": "x"}, {"step": 2, "loss": "-inf", "eval/loss": 0.5}])
    assert set(series) == {"loss"} and series["loss"]["eval"] == [(2, 0.5)]
    assert [s for s, _ in series["loss"]["train"]] == [1, 2] and series["loss"]["train"][1][1] == float("-inf")
    from alignkit.report.plots import compare_runs

    run = [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}]
    assert compare_runs({"a": run}) is None and compare_runs({"a": run, "b": [{"step": 1, "kl": 1.0}]}, ("kl",))
    assert compare_runs({"a": run, "b": run}, ("reward/score",)) is None  # no run logs it
    assert compare_runs({"a": run, "b": run})[:4] == b"\x89PNG"


def test_the_report_opens_with_the_verdict_and_the_worst_answers(tmp_path):
    from alignkit.configs import ReportConfig
    from alignkit.report.build import build_report

    run = tmp_path / "demo-run"
    run.mkdir()
    records = [{"step": s, "loss": 0.7 - 0.1 * s, "rewards/margins": 0.1 * s} for s in (1, 2, 3)]
    records.append({"step": 2, "symptom": "flat_margins", "message": "margins flat", "advice": "raise lr"})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "demo_results.json").write_text(
        json.dumps(
            {
                "problems": ["probe facts fell 0.69 -> 0.50"],
                "win_rate": {"win_rate": 0.6, "wins": 6, "ties": 2, "losses": 2},
                "probes": [{"probe": "facts", "before": 0.69, "after": 0.5, "regressed": True}],
            }
        )
    )
    answers = [
        {"kind": "arithmetic", "prompt": f"q{i}", "answer": "1", "before": "b", "after": "a", "outcome": outcome}
        for i, outcome in enumerate(["win", "tie", "loss", "win"])
    ]
    (run / "demo_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in answers))
    html = build_report(ReportConfig(runs=[str(run)])).read_text()
    card = html.index('class="card regressed"')
    assert card < html.index("Answers, worst first") < html.index("is it learning the preference")
    assert "probe facts fell 0.69 -&gt; 0.50" in html and "step 2: flat_margins (margins flat)" in html
    rows = html[html.index("Answers, worst first") :]
    assert rows.index("<td>q2</td>") < rows.index("<td>q1</td>") < rows.index("<td>q0</td>")  # loss, tie, win


def test_runs_of_one_folder_name_are_told_apart_and_a_symptom_only_run_gets_a_verdict(tmp_path):
    """Two runs both called ``run`` (``a/run``, ``b/run``) keep their own sections and both lines of the
    comparison; a run with symptoms but no eval or demo results is flagged by its symptoms."""
    from alignkit.configs import ReportConfig
    from alignkit.report.build import build_report
    from alignkit.report.cards import SHOWN, answers, verdict

    for parent, slope in (("a", 0.1), ("b", 0.2)):
        run = tmp_path / parent / "run"
        run.mkdir(parents=True)
        records = [{"step": s, "loss": 0.7 - slope * s} for s in (1, 2)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    build_report(ReportConfig(runs=[str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")]))
    md = (tmp_path / "a" / "run" / "report.md").read_text()
    assert "## Run: a/run" in md and "## Run: b/run" in md and "![runs compared]" in md

    symptoms = [{"step": 3, "symptom": "flat_margins", "message": "margins flat", "advice": "raise lr"}]
    assert verdict(tmp_path, None, []) is None
    assert verdict(tmp_path, None, symptoms) == {
        "status": "regressed",
        "headline": "Symptoms fired",
        "details": [],
        "symptoms": ["step 3: flat_margins (margins flat)"],
    }
    samples = [{"step": s, "prompt": f"p{i}", "response": "r", "score": float(i)} for s in (1, 2) for i in range(10)]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    shown = answers(tmp_path)
    assert SHOWN == 8 and shown["source"] == "samples.jsonl"
    assert [row[1] for row in shown["rows"]] == [f"p{i}" for i in range(8)]  # the last step's, lowest reward first
    assert {row[0] for row in shown["rows"]} == {2}


def test_the_verdict_of_a_demo_and_of_an_eval_and_the_judged_answers_worst_first(tmp_path):
    from alignkit.report.cards import answers, verdict

    demo = tmp_path / "demo"
    demo.mkdir()
    results = {"problems": [], "win_rate": {"win_rate": 0.5, "wins": 4, "ties": 2, "losses": 4}, "probes": []}
    (demo / "demo_results.json").write_text(json.dumps(results))
    assert verdict(demo, None, []) == {
        "status": "measured",  # exactly 0.5 is not a gain
        "headline": "Not better than the reference",
        "details": ["rule-judge win-rate 0.500 (4 wins, 2 ties, 4 losses)"],
        "symptoms": [],
    }
    results["win_rate"] = {"win_rate": 0.55, "wins": 5, "ties": 1, "losses": 4}
    results["probes"] = [{"probe": "facts", "before": 0.5, "after": 0.6, "regressed": False}]
    (demo / "demo_results.json").write_text(json.dumps(results))
    card = verdict(demo, {"win_rate": {"ci_low": 0.0}}, [])  # the demo's own results come first
    assert (card["status"], card["headline"]) == ("aligned", "Aligned")
    assert card["details"] == ["rule-judge win-rate 0.550 (5 wins, 1 ties, 4 losses)", "probe facts: 0.500 -> 0.600"]

    win = {"win_rate": 0.7, "ci_low": 0.5, "ci_high": 0.85, "n": 20, "judge": "verifier"}
    evaluated = verdict(tmp_path, {"win_rate": win, "probes": []}, [])
    assert (evaluated["status"], evaluated["headline"]) == ("measured", "Evaluated")  # the interval reaches 0.5
    assert evaluated["details"] == ["win-rate 0.700 (95% CI 0.500-0.850, 20 prompts, judge verifier)"]
    better = verdict(tmp_path, {"win_rate": dict(win, ci_low=0.51), "probes": []}, [])
    assert (better["status"], better["headline"]) == ("aligned", "Better than the reference")
    probes = [
        {"probe": "facts", "before": 0.69, "after": 0.5, "regressed": True},
        {"probe": "perplexity", "before": 9.0, "after": 9.1, "regressed": False},
    ]
    regressed = verdict(tmp_path, {"win_rate": None, "probes": probes}, [{"step": 1, "symptom": "s", "message": "m"}])
    assert regressed == {
        "status": "regressed",
        "headline": "Regressed",
        "details": ["probe facts regressed: 0.690 -> 0.500"],
        "symptoms": ["step 1: s (m)"],
    }

    (tmp_path / "eval").mkdir()
    judged = [
        {"prompt": f"q{i}", "reference": "r", "model": "m", "outcome": outcome}
        for i, outcome in enumerate(["win", "tie", "loss"] * 4)
    ]
    (tmp_path / "eval" / "winrate.jsonl").write_text("".join(json.dumps(r) + "\n" for r in judged))
    shown = answers(tmp_path)
    assert shown["source"] == "winrate.jsonl" and shown["columns"] == ["prompt", "reference", "model", "outcome"]
    assert [row[3] for row in shown["rows"]] == ["loss"] * 4 + ["tie"] * 4
    assert shown["rows"][0] == ["q2", "r", "m", "loss"]


def test_the_eval_and_sweep_sections_say_what_the_results_hold(tmp_path):
    from alignkit.report.sections import Figures, eval_blocks, sweep_blocks

    figures = Figures(tmp_path / "report_files")
    results = {
        "model": "runs/x",
        "reference": "base",
        "win_rate": {
            "win_rate": 0.625,
            "ci_low": 0.4,
            "ci_high": 0.8,
            "wins": 5,
            "ties": 0,
            "losses": 3,
            "n": 8,
            "judge": "v",
        },
        "reward_accuracy": {"accuracy": 0.75, "pairs": 8, "kind": "implicit", "flag": "in the healthy band"},
        "probes": [
            {"probe": "facts", "metric": "accuracy", "before": 0.5, "after": 0.25, "delta": -0.25, "regressed": True},
            {"probe": "perplexity", "metric": "ppl", "before": 9, "after": 9.5, "delta": 0.5, "regressed": False},
        ],
    }
    blocks = eval_blocks(results, figures)
    texts = [b["text"] for b in blocks if "text" in b]
    assert texts == [
        "model: runs/x   reference: base",
        "Win-rate vs reference: 0.625 (95% CI 0.400-0.800); 5 wins, 0 ties, 3 losses of 8; judge: v.",
        "Held-out reward accuracy: 0.750 on 8 pairs (implicit); in the healthy band.",
    ]
    [table] = [b["table"] for b in blocks if "table" in b]
    assert table["rows"] == [
        ["facts", "accuracy", "0.500", "0.250", "-0.250", "YES"],
        ["perplexity", "ppl", "9", "9.500", "+0.500", "no"],
    ]
    assert [b["alt"] for b in blocks if "figure" in b] == [
        "win-rate with 95% interval",
        "capability probes before and after",
    ]
    assert figures.count == 2 and (tmp_path / "report_files" / "figure-2.png").read_bytes()[:4] == b"\x89PNG"
    bare = eval_blocks({"model": "m", "reference": "r"}, figures)
    assert [b.get("text") for b in bare][1:] == [
        "model: m   reference: r",
        "Win-rate: not measured (no judge applied).",
    ]
    assert figures.count == 2

    sweep = {
        "recommended_beta": 0.1,
        "why": "highest win-rate",
        "rows": [
            {"beta": 0.1, "win_rate": 0.7, "ci_low": 0.5, "ci_high": 0.9, "reward_accuracy": 0.8, "regressions": []},
            {"beta": 0.5, "win_rate": None, "reward_accuracy": None, "regressions": ["facts", "perplexity"]},
        ],
    }
    blocks = sweep_blocks(sweep, tmp_path, figures)
    assert blocks[1] == {"text": "Recommended beta: 0.1 — highest win-rate"}
    assert blocks[2]["table"]["rows"] == [
        ["0.1", "0.700", "0.500-0.900", "0.800", "none"],
        ["0.5", "-", "-", "-", "facts, perplexity"],
    ]
    assert len(blocks) == 3  # no sweep.png beside it: no figure
    (tmp_path / "sweep.png").write_bytes(b"\x89PNG fake")
    assert sweep_blocks(dict(sweep, recommended_beta=None), tmp_path, figures)[1]["text"].startswith(
        "Recommended beta: none"
    )
    assert figures.count == 3


def test_a_directory_of_eval_results_a_sweep_and_a_config_is_reported_without_metrics(tmp_path):
    from alignkit.configs import ReportConfig
    from alignkit.errors import AlignkitError
    from alignkit.report.build import build_report, read_run

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval_results.json").write_text(json.dumps({"model": "m", "reference": "r"}))
    sweep = {"recommended_beta": None, "why": "every beta regressed", "rows": []}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    (tmp_path / "config.yaml").write_text("beta: 0.25\n")
    run = read_run(tmp_path)
    assert (run.records, run.eval_results, run.sweep, run.config_text) == (
        [],
        {"model": "m", "reference": "r"},
        sweep,
        "beta: 0.25\n",
    )
    build_report(ReportConfig(runs=[str(tmp_path)]))
    md = (tmp_path / "report.md").read_text()
    assert "### Evaluation" in md and "Win-rate: not measured" in md and "### Beta sweep" in md
    assert "Recommended beta: none — every beta regressed" in md and "beta: 0.25" in md
    with pytest.raises(AlignkitError, match="report.html exists; pass --overwrite true"):
        build_report(ReportConfig(runs=[str(tmp_path)], overwrite=False))
    elsewhere = tmp_path / "new" / "reports"  # a folder that does not exist yet
    build_report(ReportConfig(runs=[str(tmp_path)], output_dir=str(elsewhere), overwrite=False))
    assert (elsewhere / "report.md").read_text() == md  # the same runs: the same summary
