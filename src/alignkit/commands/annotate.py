"""``alignkit annotate``: (prompt, response A, response B) rows -> preference pairs.

- ``judge`` (RLAIF): an LLM judge compares A and B in both orders; consistent verdicts make a pair,
  ties and inconsistent verdicts are dropped and counted. Verdicts are cached, so an interrupted
  job resumes without re-asking.
- ``export``: a blind sheet for people (.csv or .jsonl): id, prompt, response_1, response_2 and an
  empty label, with A/B shown in a seeded random order; the key that undoes the shuffle goes to a
  separate file (keep it from annotators).
- ``import``: the labelled sheet (label 1, 2 or tie; blank = not done yet) + its key -> pairs.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from alignkit.atomic import atomic_path
from alignkit.configs import AnnotateConfig
from alignkit.data.preference import check_content
from alignkit.data.records import FaultCollector, read_records
from alignkit.data.synthetic import PairBuildSummary, write_pairs
from alignkit.errors import AlignkitError
from alignkit.judges.endpoint_job import EndpointJob, refuse_existing
from alignkit.judges.llm_judge import render_prompt

LABELS = {"1": 0, "2": 1, "a": 0, "b": 1, "tie": None}


def annotate(config: AnnotateConfig) -> dict:
    """``alignkit annotate``: label (prompt, A, B) rows with a position-swapped judge, or export a blind sheet
    for people, or import their labels; returns the summary written next to the output."""
    output = refuse_existing(config.output, config.overwrite)
    if config.mode == "import":
        return _import_labels(config, output)
    rows = _read_response_rows(config.input, config.response_fields)
    if config.mode == "export":
        return _export_sheet(config, rows, output)
    return _judge_rows(config, rows, output)


def _read_response_rows(source: str, fields: list[str]) -> list[dict]:
    faults = FaultCollector(source)
    rows = []
    for record in read_records(source):
        row, where = record.data, record.where
        if not isinstance(row, dict):
            faults.add(where, None, f"expected an object with prompt, {fields[0]} and {fields[1]}")
            continue
        before = faults.total
        values = {}
        for name in ["prompt", *fields]:
            if row.get(name) is None:
                faults.add(where, name, "missing")
            else:
                values[name] = check_content(row[name], where, name, faults, response=name != "prompt")
        if faults.total == before:
            rows.append({"prompt": values["prompt"], "a": values[fields[0]], "b": values[fields[1]], "where": where})
    faults.raise_if_any()
    if not rows:
        raise AlignkitError(f"{source}: contains no rows")
    return rows


def _judge_rows(config: AnnotateConfig, rows: list[dict], output: Path) -> dict:
    job = EndpointJob(config)
    judge = job.judge()
    with job.guard():
        results = judge.client.map(
            rows,
            lambda row: judge.compare(row["prompt"], row["a"], row["b"]),
            desc="judging",
            show_progress=not config.disable_tqdm,
        )
    summary, pairs = PairBuildSummary(), []
    for row, result in zip(rows, results):
        if result.winner == "tie":
            summary.dropped[
                "inconsistent verdicts across the two orders (position bias)"
                if not result.consistent
                else "judged a tie"
            ] += 1
            continue
        chosen, rejected = (row["a"], row["b"]) if result.winner == "first" else (row["b"], row["a"])
        if chosen == rejected:
            summary.dropped["with identical responses"] += 1
            continue
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": chosen,
                "rejected": rejected,
                "provenance": {
                    "annotator": f"judge:{judge.client.settings.model}",
                    "verdicts": result.verdicts,
                    "source_row": row["where"],
                },
            }
        )
        summary.kept += 1
    report = {**summary.as_dict(), "rows": len(rows), **job.stats()}
    write_pairs(output, pairs, report)
    print(f"alignkit annotate: {summary} from {len(rows)} rows -> {output}")
    return report


def _export_sheet(config: AnnotateConfig, rows: list[dict], output: Path) -> dict:
    rng = random.Random(config.seed)
    key_path = Path(config.key or f"{output}.key.jsonl")
    refuse_existing(key_path, config.overwrite)
    sheet, key = [], []
    for i, row in enumerate(rows, start=1):
        swap = rng.random() < 0.5
        first, second = (row["b"], row["a"]) if swap else (row["a"], row["b"])
        sheet.append(
            {"id": i, "prompt": render_prompt(row["prompt"]), "response_1": first, "response_2": second, "label": ""}
        )
        key.append(
            {
                "id": i,
                "swapped": swap,
                "prompt": row["prompt"],
                "a": row["a"],
                "b": row["b"],
                "source_row": row["where"],
            }
        )
    with atomic_path(output) as tmp:
        if output.suffix.lower() == ".csv":
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(sheet[0]))
                writer.writeheader()
                writer.writerows(sheet)
        else:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sheet), encoding="utf-8")
    with atomic_path(key_path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in key), encoding="utf-8")
    print(
        f"alignkit annotate: {len(sheet)} rows to label in {output} (label: 1, "
        f"2 or tie); key in {key_path} (keep it from annotators)"
    )
    return {"rows": len(sheet), "sheet": str(output), "key": str(key_path)}


def _read_sheet(path: Path) -> list[tuple[dict, str]]:
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise AlignkitError(f"labelled sheet not found: {path}")
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return [(row, f"{path}:{reader.line_num}") for row in reader]
    return [(r.data, r.where) for r in read_records(path)]


def _import_labels(config: AnnotateConfig, output: Path) -> dict:
    sheet_path = Path(config.input)
    key_path = Path(config.key or f"{sheet_path}.key.jsonl")
    if not key_path.is_file():
        raise AlignkitError(f"key file not found: {key_path} (written by --mode export next to the sheet; pass --key)")
    key = {entry.data["id"]: entry.data for entry in read_records(key_path)}
    faults = FaultCollector(str(sheet_path))
    summary, pairs = PairBuildSummary(), []
    for row, where in _read_sheet(sheet_path):
        try:
            entry = key[int(row.get("id"))]
        except (KeyError, TypeError, ValueError):
            faults.add(where, "id", f"{row.get('id')!r} is not an id of {key_path}")
            continue
        label = str(row.get("label") or "").strip().lower()
        if not label:
            summary.dropped["not labelled yet"] += 1
            continue
        if label not in LABELS:
            faults.add(where, "label", f"{label!r} is not a label (use 1, 2 or tie)")
            continue
        if LABELS[label] is None:
            summary.dropped["labelled a tie"] += 1
            continue
        shown = [entry["b"], entry["a"]] if entry["swapped"] else [entry["a"], entry["b"]]
        chosen, rejected = shown[LABELS[label]], shown[1 - LABELS[label]]
        pairs.append(
            {
                "prompt": entry["prompt"],
                "chosen": chosen,
                "rejected": rejected,
                "provenance": {"annotator": "human", "sheet_row": where, "source_row": entry["source_row"]},
            }
        )
        summary.kept += 1
    faults.raise_if_any()
    report = summary.as_dict()
    write_pairs(output, pairs, report)
    print(f"alignkit annotate: {summary} from {sheet_path} -> {output}")
    return report
