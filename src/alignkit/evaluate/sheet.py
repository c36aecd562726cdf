"""Manual inspection sheet: prompts with the reference and the aligned answer side by side
(markdown and HTML), plus the judge's outcome; read a few dozen before trusting any number."""

from __future__ import annotations

import html
from pathlib import Path


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def inspection_markdown(records: list[dict], title: str) -> str:
    """The inspection sheet as a markdown table."""
    lines = [
        f"# {title}",
        "",
        "| # | prompt | reference (before) | aligned (after) | outcome |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(records, start=1):
        lines.append(
            f"| {i} | {_md_cell(_prompt_text(r['prompt']))} | "
            f"{_md_cell(r['reference'])} | {_md_cell(r['model'])} | "
            f"{r.get('outcome', '')} |"
        )
    return "\n".join(lines) + "\n"


def inspection_html(records: list[dict], title: str) -> str:
    """The inspection sheet as a standalone HTML page."""
    rows = "\n".join(
        f"<tr class='{html.escape(r.get('outcome', ''))}'><td>{i}</td><td>{html.escape(_prompt_text(r['prompt']))}</td>"
        f"<td>{html.escape(r['reference'])}</td><td>{html.escape(r['model'])}</td>"
        f"<td>{html.escape(r.get('outcome', ''))}</td></tr>"
        for i, r in enumerate(records, start=1)
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top;white-space:pre-wrap}} th{{background:#eee}}
tr.win td:last-child{{background:#d8f5d8}} tr.loss td:last-child{{background:#f8d8d8}}
</style></head><body><h1>{html.escape(title)}</h1><table>
<tr><th>#</th><th>prompt</th><th>reference (before)</th><th>aligned (after)</th><th>outcome</th></tr>
{rows}
</table></body></html>
"""


def write_inspection(
    records: list[dict], out_dir: Path, n: int, title: str = "Manual inspection: reference vs aligned"
) -> list[Path]:
    """Write the first ``n`` records as inspection.md and inspection.html; returns both paths."""
    shown = records[:n]
    md, page = out_dir / "inspection.md", out_dir / "inspection.html"
    md.write_text(inspection_markdown(shown, title), encoding="utf-8")
    page.write_text(inspection_html(shown, title), encoding="utf-8")
    return [md, page]
