"""The report's eval and sweep sections as HTML and markdown fragments (tables and figures), collected by a
:class:`Page`; the page around them is a Jinja2 template (``templates/``)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from alignkit.report import plots


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


def add_sweep(page: Page, run) -> None:
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
