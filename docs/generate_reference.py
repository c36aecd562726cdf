"""Writes docs/reference/*.md from alignkit's own code: every command's config keys (types, choices,
defaults, descriptions, and the TRL names that map to them), every file a run writes, every metric."""

from __future__ import annotations

from pathlib import Path

from alignkit.cli import COMMANDS, _load
from alignkit.configs import TrainConfig
from alignkit.configs.loading import HELP_GROUPS, _default_text, _type_text
from alignkit.diagnose.symptoms import ADVICE
from alignkit.peer_names import trl as trl_names
from alignkit.report.plots import SYMPTOM_METRIC
from alignkit.train.run_outputs import METHOD_METRICS, METRICS, RUN_FILES


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def trl_names_of(field: str) -> list[str]:
    """TRL's names that set ``field`` (renamed keys whose conversion lands on it)."""
    names = [name for name, target in trl_names.RENAMED_IF_KNOWN.items() if target == field]
    probes = {"dtype": "bfloat16", "mixed_precision": True, "eval_split": "no", "overwrite": True}
    for name, convert in trl_names.RENAMED.items():
        try:
            if field in convert(probes.get(field, "x")):
                names.append(name)
        except Exception:  # noqa: BLE001 -- a converter that refuses the probe value names no field here
            continue
    return sorted(set(names) - {field})


def commands_page() -> str:
    """Every command with its usage line, summary and keys."""
    lines = ["# Command keys", "", "Every key of every command, as `alignkit <command> --help` prints them.", ""]
    for name, command in COMMANDS.items():
        cls = _load(command.config)
        lines += [
            f"## `alignkit {name}`",
            "",
            f"`alignkit {name} {command.usage}`".replace(" `", "`"),
            "",
            command.summary,
            "",
        ]
        if not cls.model_fields:
            lines += ["No keys.", ""]
            continue
        lines += ["| key | type | default | TRL name | description |", "|---|---|---|---|---|"]
        order = {key: i for i, key in enumerate(k for group in HELP_GROUPS.values() for k in group)}
        for key, field in sorted(cls.model_fields.items(), key=lambda kv: order.get(kv[0], -1)):
            trl = ", ".join(f"`{n}`" for n in trl_names_of(key))
            lines.append(
                f"| `{key}` | {_cell(_type_text(field.annotation))} | {_cell(_default_text(field))} | {trl} | "
                f"{_cell(field.description or '')} |"
            )
        lines.append("")
    return "\n".join(lines)


def table_page(title: str, intro: str, rows: dict[str, str], head: str) -> str:
    """A page of one two-column table."""
    lines = [f"# {title}", "", intro, "", f"| {head} | what it is |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(text)} |" for name, text in rows.items()]
    return "\n".join(lines) + "\n"


def method_page(method: str) -> str:
    """One method: its command, the keys it adds to the shared ones, its metrics, and the symptom rules that
    watch them."""
    command = COMMANDS[method]
    cls = _load(command.config)
    own = {k: f for k, f in cls.model_fields.items() if k not in TrainConfig.model_fields}
    metrics = METHOD_METRICS[method]
    symptoms = [name for name, metric in SYMPTOM_METRIC.items() if metric in metrics] + ["nonfinite_loss"]
    lines = [f"# `alignkit {method}`", "", command.summary, "", (cls.__doc__ or "").strip().replace("\n    ", " "), ""]
    lines += [
        "## Its own keys",
        "",
        "The shared keys (model, data, optimisation, logging) are in [command keys](commands.md).",
        "",
    ]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    lines += [
        f"| `{k}` | {_cell(_type_text(f.annotation))} | {_cell(_default_text(f))} | {_cell(f.description or '')} |"
        for k, f in own.items()
    ]
    lines += ["", "## Metrics it logs", "", "Besides step, epoch, grad_norm, learning rate and throughput:", ""]
    lines += ["| metric | what it is |", "|---|---|"] + [f"| `{m}` | {_cell(METRICS[m])} |" for m in metrics]
    lines += ["", "## Symptom warnings that watch it", "", "| symptom | what to do |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(ADVICE[name])} |" for name in symptoms if name in ADVICE]
    return "\n".join(lines) + "\n"


def write_reference(folder: Path) -> None:
    """Write the reference pages into ``folder`` (only the ones whose text changed)."""
    folder.mkdir(exist_ok=True)
    pages = {
        "commands.md": commands_page(),
        "run-files.md": table_page(
            "Files a run writes", "Everything a training command leaves in its `output_dir`.", RUN_FILES, "file"
        ),
        "metrics.md": table_page(
            "Metrics",
            "Every metric the trainers log to `metrics.jsonl`, TensorBoard and wandb (`eval/`-prefixed when "
            "measured on held-out data).",
            METRICS,
            "metric",
        ),
    }
    pages.update({f"method-{m}.md": method_page(m) for m in METHOD_METRICS})
    for name, text in pages.items():
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
