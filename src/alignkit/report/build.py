"""``alignkit report RUN_DIR [RUN_DIR ...]``: one self-contained HTML page (plots embedded as
data URIs, no network) and a markdown summary (plots written beside it as PNG files).

Each directory may be a training run (``metrics.jsonl``; its ``eval/`` is picked up), an eval
directory (``eval_results.json``) or a sweep (``sweep.json``). Sections: training curves for every
logged metric with symptom markers, symptom warnings, eval results (win-rate with interval,
reward accuracy, capability deltas), the sweep, and each run's config.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.configs import ReportConfig
from alignkit.errors import AlignkitError
from alignkit.report import plots


@dataclass
class RunView:
    """One directory the report covers: its metrics, eval results, sweep and config."""

    name: str
    path: Path
    records: list[dict] = field(default_factory=list)
    eval_results: dict | None = None
    sweep: dict | None = None
    config_text: str | None = None

    @property
    def symptoms(self) -> list[dict]:
        """The symptom records of the run."""
        return [r for r in self.records if "symptom" in r]


def read_run(path: Path) -> RunView:
    """Read a run, eval or sweep directory."""
    if not path.is_dir():
        raise AlignkitError(f"report: {path} is not a directory")
    view = RunView(path.name if path.name not in ("eval", "final") else f"{path.parent.name}/{path.name}", path)
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        view.records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    for candidate in (path / "eval_results.json", path / "eval" / "eval_results.json"):
        if candidate.is_file():
            view.eval_results = json.loads(candidate.read_text())
            break
    if (path / "sweep.json").is_file():
        view.sweep = json.loads((path / "sweep.json").read_text())
    if (path / "config.yaml").is_file():
        view.config_text = (path / "config.yaml").read_text()
    if not (view.records or view.eval_results or view.sweep):
        raise AlignkitError(
            f"report: {path} holds no metrics.jsonl, eval_results.json or sweep.json (is it an alignkit run directory?)"
        )
    return view


class Page:
    """Collects the same content as HTML (images inline) and markdown (images as files)."""

    def __init__(self, assets: Path):
        self.html: list[str] = []
        self.md: list[str] = []
        self.assets = assets
        self.images = 0

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading."""
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append(f"\n{'#' * level} {text}\n")

    def text(self, text: str) -> None:
        """Add a paragraph."""
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md.append(text + "\n")

    def image(self, png: bytes | None, alt: str) -> None:
        """Add a PNG figure (written beside the report; nothing when None)."""
        if png is None:
            return
        self.images += 1
        name = f"figure-{self.images}.png"
        self.assets.mkdir(parents=True, exist_ok=True)
        (self.assets / name).write_bytes(png)
        self.html.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
        self.md.append(f"![{alt}]({self.assets.name}/{name})\n")

    def table(self, header: list[str], rows: list[list]) -> None:
        """Add a table."""
        cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.html.append(f"<table><tr>{cells}</tr>{body}</table>")
        self.md.append(
            "| "
            + " | ".join(header)
            + " |\n|"
            + "---|" * len(header)
            + "\n"
            + "".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |\n" for row in rows)
        )

    def pre(self, text: str) -> None:
        """Add the config, folded."""
        self.html.append(f"<details><summary>config.yaml</summary><pre>{html.escape(text)}</pre></details>")
        self.md.append("<details><summary>config.yaml</summary>\n\n```yaml\n" + text + "```\n</details>\n")


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# what a training log of each kind of run holds: preference and supervised runs log `loss`, RL runs `loss/total`
# and the reward; evaluations are `eval/`-prefixed (RL: the held-out reward)
TRAIN_MARKERS = ("loss", "loss/total", "reward/score")
SUMMARY_KEYS = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "loss/total",
    "reward/score",
    "objective/kl",
    "objective/entropy",
    "response_length",
)


def is_train_log(record: dict) -> bool:
    """A training log of any method (not a summary, symptom or evaluation record)."""
    return any(key in record for key in TRAIN_MARKERS) and "symptom" not in record


def is_eval_log(record: dict) -> bool:
    """An evaluation record (eval/loss for the supervised methods, eval/reward/score for RL)."""
    return any(key.startswith("eval/") for key in record) and "symptom" not in record


def add_training(page: Page, run: RunView) -> None:
    """The training section: final and first/last eval metrics, curves, symptoms."""
    train = [r for r in run.records if is_train_log(r)]
    evaluation = [r for r in run.records if is_eval_log(r)]
    last, first_eval, last_eval = (
        (train[-1] if train else {}),
        (evaluation[0] if evaluation else {}),
        (evaluation[-1] if evaluation else {}),
    )
    page.text(f"{len(train)} training logs up to step {last.get('step', '-')}; {len(evaluation)} evaluations.")
    keys = [k for k in SUMMARY_KEYS if k in last or f"eval/{k}" in last_eval]
    if keys:
        page.table(
            ["metric", "train (last)", "eval (first)", "eval (last)"],
            [
                [k, _fmt(last.get(k), 4), _fmt(first_eval.get(f"eval/{k}"), 4), _fmt(last_eval.get(f"eval/{k}"), 4)]
                for k in keys
            ],
        )
    page.image(plots.training_curves(run.records, run.symptoms, run.name), f"training curves of {run.name}")
    if run.symptoms:
        page.heading("Symptom warnings", 3)
        page.table(
            ["step", "symptom", "what happened", "advice"],
            [[s["step"], s["symptom"], s["message"], s["advice"]] for s in run.symptoms],
        )
    elif run.records:
        page.text("No symptom warnings were raised.")


def add_eval(page: Page, results: dict) -> None:
    """The evaluation section: win-rate, reward accuracy, probes."""
    page.heading("Evaluation", 3)
    page.text(f"model: {results.get('model')}   reference: {results.get('reference')}")
    win = results.get("win_rate")
    if win:
        page.text(
            f"Win-rate vs reference: {win['win_rate']:.3f} (95% CI {win['ci_low']:.3f}-{win['ci_high']:.3f}); "
            f"{win['wins']} wins, {win['ties']} ties, {win['losses']} losses of {win['n']}; judge: {win['judge']}."
        )
        page.image(plots.win_rate_bar(win), "win-rate with 95% interval")
    else:
        page.text("Win-rate: not measured (no judge applied).")
    accuracy = results.get("reward_accuracy")
    if accuracy:
        page.text(
            f"Held-out reward accuracy: {accuracy['accuracy']:.3f} on "
            f"{accuracy['pairs']} pairs ({accuracy['kind']}); {accuracy['flag']}."
        )
    probes = results.get("probes") or []
    if probes:
        page.table(
            ["probe", "metric", "before", "after", "delta", "regressed"],
            [
                [
                    p["probe"],
                    p["metric"],
                    _fmt(p["before"]),
                    _fmt(p["after"]),
                    f"{p['delta']:+.3f}",
                    "YES" if p["regressed"] else "no",
                ]
                for p in probes
            ],
        )
        page.image(plots.probe_bars(probes), "capability probes before and after")


def add_sweep(page: Page, run: RunView) -> None:
    """The sweep section: one row per beta, the recommendation and its plot."""
    sweep = run.sweep
    page.heading("Beta sweep", 3)
    best = sweep.get("recommended_beta")
    page.text(f"Recommended beta: {'none' if best is None else f'{best:g}'} — {sweep.get('why', '')}")
    page.table(
        ["beta", "win-rate", "95% CI", "reward accuracy", "regressions"],
        [
            [
                f"{r['beta']:g}",
                _fmt(r["win_rate"]),
                "-" if r["win_rate"] is None else f"{r['ci_low']:.3f}-{r['ci_high']:.3f}",
                _fmt(r["reward_accuracy"]),
                ", ".join(r["regressions"]) or "none",
            ]
            for r in sweep["rows"]
        ],
    )
    figure = run.path / "sweep.png"
    if figure.is_file():
        page.image(figure.read_bytes(), "beta sweep")


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}
img{max-width:100%;display:block;margin:.6em 0}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top} th{background:#eee}
pre{background:#f6f6f6;padding:1em;overflow:auto} h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def build_report(config: ReportConfig) -> Path:
    """``alignkit report``: report.html (self-contained but for its figures) and report.md over the runs; returns
    the HTML path."""
    runs = [read_run(Path(p)) for p in config.runs]
    out = Path(config.output_dir) if config.output_dir else runs[0].path
    html_path, md_path = out / "report.html", out / "report.md"
    if not config.overwrite and (html_path.exists() or md_path.exists()):
        raise AlignkitError(f"{html_path} exists; pass --overwrite true or choose another --output_dir")
    page = Page(out / "report_files")
    page.heading("alignkit report", 1)
    page.text("Runs: " + ", ".join(str(r.path) for r in runs))
    page.image(plots.compare_runs({r.name: r.records for r in runs if r.records}), "runs compared")
    for run in runs:
        page.heading(f"Run: {run.name}")
        if run.records:
            add_training(page, run)
        if run.eval_results:
            add_eval(page, run.eval_results)
        if run.sweep:
            add_sweep(page, run)
        if run.config_text:
            page.pre(run.config_text)
    out.mkdir(parents=True, exist_ok=True)
    html_path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>alignkit "
        f"report</title><style>{STYLE}</style></head><body>\n" + "\n".join(page.html) + "\n</body></html>\n",
        encoding="utf-8",
    )
    md_path.write_text("".join(page.md), encoding="utf-8")
    print(f"alignkit report: wrote {html_path} and {md_path} ({page.images} figures)")
    return html_path
