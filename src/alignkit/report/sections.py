"""The report's eval and sweep sections as data: a list of blocks (a heading, a paragraph, a figure or a
table) that the HTML and markdown templates (``templates/``) both render, and the figures they refer to."""

from __future__ import annotations

import base64
from pathlib import Path

from alignkit.report import plots


class Figures:
    """PNG figures written beside the report (for the markdown) and inlined as data URIs (in the HTML)."""

    def __init__(self, assets: Path):
        self.assets, self.count = assets, 0

    def add(self, png: bytes, title: str) -> dict:
        """``{"uri", "file"}`` of a new figure."""
        self.count += 1
        self.assets.mkdir(parents=True, exist_ok=True)
        name = f"figure-{self.count}.png"
        (self.assets / name).write_bytes(png)
        return {"uri": "data:image/png;base64," + base64.b64encode(png).decode(), "file": f"{self.assets.name}/{name}"}


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _figure(figures: Figures, png: bytes | None, alt: str) -> list[dict]:
    return [{"figure": figures.add(png, alt), "alt": alt}] if png is not None else []


def eval_blocks(results: dict, figures: Figures) -> list[dict]:
    """The evaluation section: win-rate, reward accuracy, probes."""
    blocks: list[dict] = [
        {"heading": "Evaluation"},
        {"text": f"model: {results.get('model')}   reference: {results.get('reference')}"},
    ]
    win = results.get("win_rate")
    if win:
        blocks.append(
            {
                "text": f"Win-rate vs reference: {win['win_rate']:.3f} (95% CI {win['ci_low']:.3f}-"
                f"{win['ci_high']:.3f}); {win['wins']} wins, {win['ties']} ties, {win['losses']} losses of "
                f"{win['n']}; judge: {win['judge']}."
            }
        )
        blocks += _figure(figures, plots.win_rate_bar(win), "win-rate with 95% interval")
    else:
        blocks.append({"text": "Win-rate: not measured (no judge applied)."})
    accuracy = results.get("reward_accuracy")
    if accuracy:
        blocks.append(
            {
                "text": f"Held-out reward accuracy: {accuracy['accuracy']:.3f} on {accuracy['pairs']} pairs "
                f"({accuracy['kind']}); {accuracy['flag']}."
            }
        )
    probes = results.get("probes") or []
    if probes:
        rows = [
            [p["probe"], p["metric"], _fmt(p["before"]), _fmt(p["after"]), f"{p['delta']:+.3f}"]
            + ["YES" if p["regressed"] else "no"]
            for p in probes
        ]
        blocks.append(
            {"table": {"columns": ["probe", "metric", "before", "after", "delta", "regressed"], "rows": rows}}
        )
        blocks += _figure(figures, plots.probe_bars(probes), "capability probes before and after")
    return blocks


def sweep_blocks(sweep: dict, path: Path, figures: Figures) -> list[dict]:
    """The sweep section: one row per beta, the recommendation and its plot."""
    best = sweep.get("recommended_beta")
    rows = [
        [
            f"{r['beta']:g}",
            _fmt(r["win_rate"]),
            "-" if r["win_rate"] is None else f"{r['ci_low']:.3f}-{r['ci_high']:.3f}",
            _fmt(r["reward_accuracy"]),
            ", ".join(r["regressions"]) or "none",
        ]
        for r in sweep["rows"]
    ]
    blocks = [
        {"heading": "Beta sweep"},
        {"text": f"Recommended beta: {'none' if best is None else f'{best:g}'} — {sweep.get('why', '')}"},
        {"table": {"columns": ["beta", "win-rate", "95% CI", "reward accuracy", "regressions"], "rows": rows}},
    ]
    figure = path / "sweep.png"
    return blocks + (_figure(figures, figure.read_bytes(), "beta sweep") if figure.is_file() else [])
