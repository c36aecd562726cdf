"""``alignkit report RUN_DIR [RUN_DIR ...]``: one self-contained HTML page (plots embedded as
data URIs, no network) and a markdown summary (plots written beside it as PNG files).

Each directory may be a training run (``metrics.jsonl``; its ``eval/`` is picked up), an eval
directory (``eval_results.json``) or a sweep (``sweep.json``). Per run, what a person wants first comes
first: a verdict card (aligned or regressed, the win-rate and its interval, probes that regressed,
symptoms that fired and when), answers to read (worst first), then the curves grouped by what they tell
(each symptom marked on the metric it concerns; system curves folded away), eval results, the sweep, and
the config. The page is rendered from Jinja2 templates (``report/templates``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from alignkit.configs import ReportConfig
from alignkit.errors import AlignkitError
from alignkit.log_files import read_jsonl
from alignkit.report import plots
from alignkit.report.cards import answers, verdict
from alignkit.report.sections import Figures, _fmt, eval_blocks, sweep_blocks


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
        view.records = read_jsonl(metrics)
    for candidate in (path / "eval_results.json", path / "eval" / "eval_results.json"):
        if candidate.is_file():
            view.eval_results = json.loads(candidate.read_text())
            break
    if (path / "sweep.json").is_file():
        view.sweep = json.loads((path / "sweep.json").read_text())
    if (path / "config.yaml").is_file():
        view.config_text = (path / "config.yaml").read_text(encoding="utf-8")
    if not (view.records or view.eval_results or view.sweep):
        raise AlignkitError(
            f"report: {path} holds no metrics.jsonl, eval_results.json or sweep.json (is it an alignkit run directory?)"
        )
    return view


def name_apart(runs: list[RunView]) -> None:
    """Give runs that share a folder name (``a/run`` and ``b/run``) names that tell them apart: as many trailing
    path parts as it takes, for every run, so the comparison plot and the sections do not merge them."""
    parts = [run.path.resolve().parts for run in runs]
    depth = 1
    while len({run.name for run in runs}) < len(runs) and depth < max(map(len, parts)):
        depth += 1
        for run, own in zip(runs, parts):
            run.name = "/".join(own[-depth:])


# what a training log of each kind of run holds: preference and supervised runs log `loss`, RL runs `loss/total`
# and the reward; evaluations are `eval/`-prefixed (RL: the held-out reward)
TRAIN_MARKERS = ("loss", "loss/total", "reward/score")
PREFERENCE_SUMMARY_KEYS = (  # the DPO family's headline metrics (the demo prints the same table)
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
)
SUMMARY_KEYS = (
    *PREFERENCE_SUMMARY_KEYS,
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


def training_view(run: RunView, figures: Figures) -> dict:
    """A run's training part for the templates: a one-line summary, the main metrics table, grouped curves
    and the symptom warnings."""
    train = [r for r in run.records if is_train_log(r)]
    evaluation = [r for r in run.records if is_eval_log(r)]
    last = train[-1] if train else {}
    first_eval, last_eval = (evaluation[0] if evaluation else {}), (evaluation[-1] if evaluation else {})
    keys = [k for k in SUMMARY_KEYS if k in last or f"eval/{k}" in last_eval]
    rows = [
        [k, _fmt(last.get(k), 4), _fmt(first_eval.get(f"eval/{k}"), 4), _fmt(last_eval.get(f"eval/{k}"), 4)]
        for k in keys
    ]
    curves = [
        {"title": title, "folded": title.startswith("system") or title == "other", **figures.add(png, title)}
        for title, png in plots.grouped_curves(run.records, run.symptoms)
    ]
    return {
        "summary": f"{len(train)} training logs up to step {last.get('step', '-')}; {len(evaluation)} evaluations.",
        "table": {"columns": ["metric", "train (last)", "eval (first)", "eval (last)"], "rows": rows} if rows else None,
        "curves": curves,
        "symptom_rows": [[s["step"], s["symptom"], s["message"], s["advice"]] for s in run.symptoms],
    }


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
img{max-width:100%;display:block;margin:.6em 0}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top;max-width:32em} th{background:#eee}
pre{background:#f6f6f6;padding:1em;overflow:auto} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
details{margin:.6em 0} summary{cursor:pointer;font-weight:600}
.card{border-radius:8px;padding:.8em 1.2em;margin:1em 0;border:2px solid #999;background:#fafafa}
.card .headline{font-size:1.5em;font-weight:700}
.card.aligned{border-color:#2e7d32;background:#f1f8f1} .card.aligned .headline{color:#2e7d32}
.card.regressed{border-color:#c62828;background:#fdf1f1} .card.regressed .headline{color:#c62828}
.card .symptoms{color:#c62828} .card .quiet{color:#555}"""


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("alignkit.report", "templates"),
        autoescape=select_autoescape(["html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_cell"] = lambda value: str(value).replace("|", "\\|").replace("\n", " ")
    return env


def build_report(config: ReportConfig) -> Path:
    """``alignkit report``: report.html (self-contained) and report.md (figures beside it) over the runs;
    returns the HTML path."""
    runs = [read_run(Path(p)) for p in config.runs]
    name_apart(runs)
    out = Path(config.output_dir) if config.output_dir else runs[0].path
    html_path, md_path = out / "report.html", out / "report.md"
    if not config.overwrite and (html_path.exists() or md_path.exists()):
        raise AlignkitError(f"{html_path} exists; pass --overwrite true or choose another --output_dir")
    figures = Figures(out / "report_files")
    compared = plots.compare_runs({r.name: r.records for r in runs if r.records})
    views = []
    for run in runs:
        blocks = eval_blocks(run.eval_results, figures) if run.eval_results else []
        blocks += sweep_blocks(run.sweep, run.path, figures) if run.sweep else []
        views.append(
            {
                "name": run.name,
                "path": str(run.path),
                "verdict": verdict(run.path, run.eval_results, run.symptoms),
                "answers": answers(run.path),
                "config_text": run.config_text,
                "blocks": blocks,
                **(training_view(run, figures) if run.records else {"curves": [], "symptom_rows": []}),
            }
        )
    context = {"runs": views, "style": STYLE, "compare": figures.add(compared, "runs compared") if compared else None}
    env = _templates()
    out.mkdir(parents=True, exist_ok=True)
    html_path.write_text(env.get_template("report.html.j2").render(**context), encoding="utf-8")
    md_path.write_text(env.get_template("report.md.j2").render(**context), encoding="utf-8")
    print(f"alignkit report: wrote {html_path} and {md_path} ({figures.count} figures)")
    return html_path
