"""A labelling project: ``project.yaml`` (what is asked, how), ``items.jsonl`` (what is shown) and
``labels.sqlite`` (who said what; see ``label.store``), all in one folder.

Kinds of project:
- ``compare``: a prompt and two answers, shown blind in a seeded random order per item and
  annotator; answers from two models, ``(prompt, response_a, response_b)`` rows, or a pairs file
  whose judge labels are audited (the judge preferred ``response_a``, the pair's chosen answer);
- ``thumbs``: one answer per prompt, thumbs up or down (exported as KTO rows);
- ``review``: the reference model's and the aligned model's answers side by side, named, with a
  pass/fail mark and notes (exported as ``alignkit eval``'s inspection sheet).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alignkit.errors import ConfigError

PROJECT_FILE, ITEMS_FILE, DB_FILE = "project.yaml", "items.jsonl", "labels.sqlite"
FIELDS = {
    "compare": ("prompt", "response_a", "response_b"),
    "thumbs": ("prompt", "response"),
    "review": ("prompt", "reference", "model"),
}
DEFAULT_RUBRIC = (
    "Which answer is better for the person who asked? Prefer the answer that is **correct**, then **helpful**, "
    "then **concise**. Say *tie* only when neither is better."
)


class LabelProject(BaseModel):
    """``project.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., min_length=1, description="Shown on the page and written into every exported row's provenance."
    )
    kind: Literal["compare", "thumbs", "review"] = Field(
        "compare", description="What annotators do (see the module docstring)."
    )
    scale: Literal["binary", "tie", "five"] = Field(
        "tie",
        description="compare: binary (A or B), tie (A, B or tie), five (1 = A much better "
        "... 3 = tie ... 5 = B much better).",
    )
    rubric: str = Field(DEFAULT_RUBRIC, description="Markdown shown beside every item.")
    overlap: int = Field(
        1, ge=1, description="How many annotators see each item (the first `overlap` annotators added take every item)."
    )
    seed: int = Field(0, description="Seeds the A/B order per item and annotator, and each annotator's item order.")
    reasons: bool = Field(True, description="Offer an optional free-text reason with each label.")


class Item(BaseModel):
    """One item to label: its prompt and the answers shown (extra fields pass through to the export)."""

    model_config = ConfigDict(extra="allow")

    id: str
    prompt: str


def load_project(path: str | Path) -> tuple[Path, LabelProject, list[dict]]:
    """(folder, project, items), validated: a bad file names the file, line and field."""
    root = Path(path)
    config_path = root / PROJECT_FILE
    if not config_path.is_file():
        raise ConfigError(
            f"{root}: not a labelling project (no {PROJECT_FILE}); create one with "
            f"'alignkit label init {root} --rows FILE'"
        )
    try:
        project = LabelProject(**(yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}))
    except (yaml.YAMLError, TypeError) as exc:
        raise ConfigError(f"{config_path}: invalid YAML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(
            f"{config_path}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None
    return root, project, read_items(root / ITEMS_FILE, project.kind)


def read_items(path: Path, kind: str) -> list[dict]:
    """The items of a project's JSONL file, validated for ``kind`` (pairs, thumbs or review); errors name the line."""
    items, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
        for field in ("id", *FIELDS[kind]):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise ConfigError(
                    f"{path}:{number}: missing or empty field '{field}' (a {kind} item "
                    f"needs {', '.join(('id',) + FIELDS[kind])})"
                )
        if row["id"] in seen:
            raise ConfigError(f"{path}:{number}: duplicate id '{row['id']}'")
        seen.add(row["id"])
        items.append(row)
    if not items:
        raise ConfigError(f"{path}: no items")
    return items


def items_from_rows(rows: list[dict], kind: str, source: str) -> list[dict]:
    """Project items from input rows: ``(prompt, response_a, response_b)`` or ``(prompt, chosen,
    rejected)`` (a judge audit: the judge's choice is ``a``) for compare; ``(prompt, completion)``
    or ``(prompt, response)`` for thumbs; ``(prompt, reference, model)`` or ``(prompt, response_a,
    response_b)`` for review. A row missing what its kind needs is refused with its file and line."""
    items = []
    for number, row in enumerate(rows, start=1):
        item = {"id": str(row.get("id", number)), "prompt": row.get("prompt")}
        if kind == "compare" and "chosen" in row:
            item.update(response_a=row.get("chosen"), response_b=row.get("rejected"), judge="a")
        elif kind == "compare":
            item.update(response_a=row.get("response_a"), response_b=row.get("response_b"))
            if row.get("judge") in ("a", "b", "tie"):
                item["judge"] = row["judge"]
        elif kind == "thumbs":
            item["response"] = row.get("response", row.get("completion"))
        else:
            item.update(
                reference=row.get("reference", row.get("response_a")), model=row.get("model", row.get("response_b"))
            )
        for field in FIELDS[kind]:
            if not isinstance(item.get(field), str) or not item[field].strip():
                raise ConfigError(f"{source}:{number}: missing or empty field '{field}' for a {kind} project")
        items.append(item)
    return items


def write_project(root: Path, project: LabelProject, items: list[dict]) -> None:
    """Write ``project.yaml`` and ``items.jsonl`` of a new project under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / PROJECT_FILE).write_text(
        yaml.safe_dump(project.model_dump(), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    (root / ITEMS_FILE).write_text(
        "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8"
    )


def shown_left(seed: int, annotator: str, item_id: str) -> str:
    """Which answer (a or b) this annotator sees on the left for this item: a seeded coin per (item, annotator)."""
    return "a" if hashlib.sha256(f"{seed}:{annotator}:{item_id}".encode()).digest()[0] % 2 == 0 else "b"


def item_order(seed: int, item_ids: list[str], salt: str = "") -> list[str]:
    """``item_ids`` in a fixed pseudo-random order per (seed, salt): each annotator's own order."""
    return sorted(item_ids, key=lambda i: hashlib.sha256(f"{seed}:{salt}:{i}".encode()).digest())
