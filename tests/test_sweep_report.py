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
    from alignkit.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "holds no metrics.jsonl" in capsys.readouterr().err


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
