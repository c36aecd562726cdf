"""``alignkit label``: init a project, add annotators, serve the app, print stats, export labels."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from alignkit.commands.label.app import (
    create_app,  # the web parts are an extra ([data])
)
from alignkit.commands.label.project import (
    DB_FILE,
    ITEMS_FILE,
    PROJECT_FILE,
    LabelProject,
    item_order,
    items_from_rows,
    load_project,
    write_project,
)
from alignkit.commands.label.report import export_labels, stats_lines
from alignkit.commands.label.stats import label_stats
from alignkit.commands.label.store import LabelStore
from alignkit.configs import LabelConfig
from alignkit.data.prompts import load_prompt_rows
from alignkit.data.records import read_records
from alignkit.engine.generation import generate_responses
from alignkit.errors import ConfigError, RunDirError, require
from alignkit.evaluate.models import load_eval_models
from alignkit.train.run_dir import check_deletable

ADMIN = "admin"


def run_label(config: LabelConfig) -> int:
    """``alignkit label``: run the action the config names (init, add-annotator, serve, stats, export); exit status."""
    return {
        "init": init_project,
        "add-annotator": add_annotator,
        "serve": serve_project,
        "stats": print_stats,
        "export": export_project,
    }[config.action](config)


def init_project(config: LabelConfig) -> int:
    """Make the project folder (nothing is written when an input row is bad); print the admin token."""
    root = Path(config.project)
    if root.exists() and any(root.iterdir()):
        if not config.overwrite:
            raise RunDirError(f"{root} exists and is not empty; pass --overwrite to replace it")
        check_deletable(root, lambda name: name in (PROJECT_FILE, DB_FILE, ITEMS_FILE), "labelling project")
    if bool(config.rows) == bool(config.prompts):
        raise ConfigError(
            "label init needs --rows FILE (answers given) or --prompts FILE with --model_b (answers generated)"
        )
    items = items_from_rows(_rows(config.rows), config.kind, config.rows) if config.rows else _generated_items(config)
    rubric = config.rubric
    if rubric and rubric.endswith(".md") and Path(rubric).is_file():
        rubric = Path(rubric).read_text(encoding="utf-8")
    project = LabelProject(
        name=config.name or root.resolve().name,
        kind=config.kind,
        scale=config.scale,
        overlap=config.overlap,
        seed=config.seed,
        **({"rubric": rubric} if rubric else {}),
    )
    if root.exists():
        shutil.rmtree(root)
    write_project(root, project, items)
    token = LabelStore(root / DB_FILE).add_annotator(ADMIN, [], project.overlap, admin=True)
    judged = sum(1 for item in items if item.get("judge"))
    print(
        f"alignkit label: {root}: {len(items)} {project.kind} items"
        + (f" ({judged} with a judge label to audit)" if judged else "")
    )
    print(f"  admin token (stats page, keep it): {token}")
    print(f"  next: alignkit label add-annotator {root} NAME, then alignkit label {root}")
    return 0


def _rows(source: str) -> list[dict]:
    return [record.data if isinstance(record.data, dict) else {} for record in read_records(source)]


def _generated_items(config: LabelConfig) -> list[dict]:
    """Answers to each prompt from model_a and model_b (greedy), as compare or review items."""
    if not config.model_b:
        raise ConfigError(
            "label init --prompts needs --model_b (and optionally --model_a; default: model_b's base model)"
        )
    rows = load_prompt_rows(config.prompts)
    prompts = [row["prompt"] for row in rows]
    models = load_eval_models(config.model_b, config.model_a)
    second = generate_responses(models.policy, models.tokenizer, prompts, config.max_new_tokens, desc="model_b")
    with models.reference() as reference:
        first = generate_responses(reference, models.tokenizer, prompts, config.max_new_tokens, desc="model_a")
    kind = "compare" if config.kind == "thumbs" else config.kind
    fields = ("response_a", "response_b") if kind == "compare" else ("reference", "model")
    empty = "(the model gave an empty answer)"
    return items_from_rows(
        [{"prompt": p, fields[0]: a or empty, fields[1]: b or empty} for p, a, b in zip(prompts, first, second)],
        kind,
        config.prompts,
    )


def add_annotator(config: LabelConfig) -> int:
    """``label add-annotator``: register a name, print its private link once (only its hash is stored)."""
    root, project, items = load_project(config.project)
    if not config.name or config.name == ADMIN:
        raise ConfigError(
            f"label add-annotator needs a name other than '{ADMIN}': alignkit label add-annotator {root} NAME"
        )
    store = LabelStore(root / DB_FILE)
    try:
        token = store.add_annotator(
            config.name, item_order(project.seed, [i["id"] for i in items], config.name), project.overlap
        )
    except ValueError as exc:
        raise ConfigError(f"{root}: {exc}") from None
    assigned = len(store.assigned(config.name))
    print(f"alignkit label: annotator '{config.name}' added with {assigned} items; token (shown once): {token}")
    print(f"  their link, once the app runs: http://{config.host}:{config.port}/?token={token}")
    return 0


def serve_project(config: LabelConfig) -> int:
    """``label serve``: serve the project's app until Ctrl+C."""
    uvicorn = require("uvicorn", "data", "alignkit label")
    require("fastapi", "data", "alignkit label")
    app = create_app(config.project)
    print(
        f"alignkit label: serving {config.project} at http://{config.host}:{config.port}/ (annotators open their link; "
        f"the stats page is /stats?token=ADMIN_TOKEN; Ctrl+C stops)",
        flush=True,
    )
    uvicorn.run(
        app, host=config.host, port=config.port, log_level="warning", access_log=False
    )  # page URLs carry tokens: no access log
    return 0


def print_stats(config: LabelConfig) -> int:
    """``label stats``: print the agreement figures (or JSON with ``--json_output``)."""
    root, project, items = load_project(config.project)
    store = LabelStore(root / DB_FILE)
    stats = label_stats(store.all_labels(), items, store.annotators(), project.seed)
    if config.json_output:
        print(json.dumps(stats, indent=1))
        return 0
    width = max(len(k) for k, _ in stats_lines(stats))
    for key, value in stats_lines(stats):
        print(f"{key:<{width}}  {value}")
    for d in stats.get("judge", {}).get("disagreements", [])[:20]:
        print(f"  disagreement: item {d['item_id']}: judge {d['judge']}, people {d['people']} {d['votes']}")
    return 0


def export_project(config: LabelConfig) -> int:
    """``label export``: write the majority-vote pairs (or thumbs rows, or the review sheet) to ``--output``."""
    if not config.output:
        raise ConfigError("label export needs --output FILE")
    root, project, items = load_project(config.project)
    counts = export_labels(
        project, items, LabelStore(root / DB_FILE).all_labels(), Path(config.output), config.ties, config.overwrite
    )
    print(
        f"alignkit label: {counts['written']} rows written to {config.output} from {counts['labelled']} labelled items "
        f"({counts['ties']} ties {'kept aside' if config.ties == 'keep' else 'dropped'}, "
        f"{counts['no_majority']} without a majority)",
        file=sys.stderr,
    )
    return 0
