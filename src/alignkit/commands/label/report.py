"""Out of a labelling project: the stats as lines (CLI and page), and the export to training rows
(DPO pairs by majority vote, KTO rows from thumbs, the inspection sheet from a review)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from alignkit.atomic import atomic_path
from alignkit.commands.label.project import LabelProject
from alignkit.commands.label.stats import majority
from alignkit.errors import RunDirError
from alignkit.evaluate.sheet import inspection_html, inspection_markdown


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def stats_lines(stats: dict) -> list[tuple[str, str]]:
    """The stats as (label, value) lines for the CLI and the stats page."""
    lines = [("labels", f"{stats['labels']} on {stats['items_labelled']} of {stats['items']} items")]
    lines += [(f"labels by {name}", str(count)) for name, count in stats["per_annotator"].items()]
    if "cohen_kappa" in stats:
        lines.append(
            (
                "Cohen's kappa (two annotators)",
                f"{_number(stats['cohen_kappa'])} on {stats['kappa_items']} items labelled by both",
            )
        )
    lines.append(("Krippendorff's alpha (nominal)", _number(stats["krippendorff_alpha"])))
    if "position_bias" in stats:
        bias = stats["position_bias"]
        lines.append(
            (
                "position bias",
                f"the left answer won {bias['left_wins']} of {bias['decided']} decided "
                f"labels ({bias['left_win_rate']:.0%}; 50% is unbiased)",
            )
        )
    if "judge" in stats:
        judge = stats["judge"]
        low, high = judge["interval_95"]
        lines.append(
            (
                "judge vs people",
                f"agreement {_number(judge['agreement'])} (95% bootstrap "
                f"{_number(low)}-{_number(high)}) on {judge['items']} items "
                f"with a majority; {len(judge['disagreements'])} disagreements",
            )
        )
    return lines


def export_labels(
    project: LabelProject,
    items: list[dict],
    labels: list[dict],
    output: Path,
    ties: str = "drop",
    overwrite: bool = False,
) -> dict:
    """Write the project's labels as training rows; returns counts. compare: one DPO pair per item with
    a majority (ties dropped, or with ``ties="keep"`` written to ``<output>.ties.jsonl``); thumbs: KTO
    rows; review: the inspection sheet (markdown, and HTML beside it). Every row says where it came from."""
    if output.exists() and not overwrite:
        raise RunDirError(f"{output} exists; pass --overwrite to replace it")
    by_item: dict[str, list[dict]] = defaultdict(list)
    for label in labels:
        by_item[label["item_id"]].append(label)
    counts = {"items": len(items), "labelled": 0, "written": 0, "ties": 0, "no_majority": 0}
    rows, tie_rows = [], []
    for item in items:
        given = by_item.get(item["id"])
        if not given:
            continue
        counts["labelled"] += 1
        verdict, votes = majority(given)
        provenance = {
            "source": f"label:{project.name}",
            "item_id": item["id"],
            "annotators": sorted(label["annotator"] for label in given),
            "votes": dict(votes),
            "agreement": max(votes.values()) / len(given),
        }
        if verdict is None:
            counts["no_majority"] += 1
            continue
        if project.kind == "compare":
            if verdict == "tie":
                counts["ties"] += 1
                tie_rows.append(
                    {
                        "prompt": item["prompt"],
                        "response_a": item["response_a"],
                        "response_b": item["response_b"],
                        "provenance": provenance,
                    }
                )
                continue
            chosen, rejected = ("response_a", "response_b") if verdict == "a" else ("response_b", "response_a")
            rows.append(
                {"prompt": item["prompt"], "chosen": item[chosen], "rejected": item[rejected], "provenance": provenance}
            )
        elif project.kind == "thumbs":
            rows.append(
                {
                    "prompt": item["prompt"],
                    "completion": item["response"],
                    "label": verdict == "up",
                    "provenance": provenance,
                }
            )
        else:
            notes = "; ".join(label["reason"] for label in given if label.get("reason"))
            rows.append(
                {
                    "prompt": item["prompt"],
                    "reference": item["reference"],
                    "model": item["model"],
                    "outcome": verdict,
                    "notes": notes,
                }
            )
    if project.kind == "review":
        with atomic_path(output) as tmp:
            tmp.write_text(inspection_markdown(rows, f"{project.name}: review"), encoding="utf-8")
        with atomic_path(output.with_suffix(".html")) as tmp:
            tmp.write_text(inspection_html(rows, f"{project.name}: review"), encoding="utf-8")
    else:
        _write_jsonl(output, rows)
        if ties == "keep" and tie_rows:
            _write_jsonl(output.with_suffix(".ties.jsonl"), tie_rows)
    counts["written"] = len(rows)
    return counts


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
