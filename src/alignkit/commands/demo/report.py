"""What ``alignkit demo`` prints: samples, the before/after table (held-out answers by kind, the
capability probes, the rule judge's win-rate), the final DPO metrics and the verdict."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from alignkit.report.build import PREFERENCE_SUMMARY_KEYS

# key -> (label, better is); "accuracy" is arithmetic, as in alignkit.evaluate.answers.answer_metrics
METRIC_LABELS = {
    "accuracy": ("arithmetic answered correctly", "higher"),
    "knowledge_accuracy": ("general knowledge answered correctly", "higher"),
    "not_sure_rate": ("says 'not sure' (unanswerable)", "higher"),
    "false_not_sure_rate": ("wrongly declines (answerable)", "lower"),
    "mean_words": ("mean answer length (words)", "lower"),
    "degenerate": ("looping replies (count)", "lower"),
    "runaway": ("replies cut off at max_new_tokens (count)", "lower"),
}
PROBE_LABELS = {
    "facts": "probe: facts (accuracy)",
    "arithmetic": "probe: arithmetic (accuracy)",
    "perplexity": "probe: perplexity (general text)",
}


def regressions(before: dict, after: dict, probes: list[dict], tolerance: float) -> list[str]:
    """Every way the aligned model is worse than the reference: a probe past alignkit eval's tolerance,
    held-out general knowledge down by more than ``tolerance``, more looping replies or more replies
    running into the token limit than before."""
    problems = [
        f"probe {p['probe']}: {p['before']:.3f} -> {p['after']:.3f} ({p['delta']:+.3f}) REGRESSED"
        for p in probes
        if p["regressed"]
    ]
    if after["knowledge_accuracy"] < before["knowledge_accuracy"] - tolerance:
        problems.append(
            f"held-out general knowledge: {before['knowledge_accuracy']:.3f} -> "
            f"{after['knowledge_accuracy']:.3f} REGRESSED"
        )
    if after["degenerate"] > before["degenerate"]:
        problems.append(
            f"looping replies on held-out prompts: {before['degenerate']:.0f} -> {after['degenerate']:.0f} (degenerate)"
        )
    if after.get("runaway", 0) > before.get("runaway", 0):
        problems.append(
            "replies cut off at max_new_tokens on held-out prompts: "
            f"{before['runaway']:.0f} -> {after['runaway']:.0f} (runaway length)"
        )
    return problems


def print_samples(console: Console, tasks, before: list[str], after: list[str], count: int) -> None:
    """``count`` held-out prompts, spread over the three kinds, with both answers."""
    if count <= 0:
        return
    by_kind = {
        kind: [i for i, t in enumerate(tasks) if t.kind == kind] for kind in ("arithmetic", "unanswerable", "knowledge")
    }
    chosen = [by_kind[kind][j] for j in range(count) for kind in by_kind if j < len(by_kind[kind])][:count]
    table = Table(title="Held-out prompts: reference model vs aligned model", show_lines=True, expand=True)
    table.add_column("prompt", ratio=2)
    table.add_column("before (reference)", ratio=3)
    table.add_column("after (aligned)", ratio=3)
    for i in chosen:
        table.add_row(tasks[i].prompt, before[i], after[i])
    console.print(table)


def print_comparison(console: Console, tasks, before: dict, after: dict, probes: list[dict], wins: dict) -> None:
    """Print the before/after table on the held-out prompts, the capability probes and the win-rate."""
    counts = {kind: sum(t.kind == kind for t in tasks) for kind in ("arithmetic", "unanswerable", "knowledge")}
    table = Table(
        title=f"Held-out set ({len(tasks)} prompts in phrasings, shapes and facts never trained on: "
        f"{counts['arithmetic']} arithmetic, {counts['unanswerable']} "
        f"unanswerable, {counts['knowledge']} general knowledge)"
    )
    for column in ("metric", "before", "after", "better is"):
        table.add_column(column)
    for key, (label, direction) in METRIC_LABELS.items():
        if key in after:
            table.add_row(label, _fmt(before[key]), _styled(before[key], after[key], direction == "higher"), direction)
    for probe in probes:
        style = "red" if probe["regressed"] else None
        after_text = f"[{style}]{probe['after']:.3g}[/{style}]" if style else f"{probe['after']:.3g}"
        table.add_row(
            PROBE_LABELS.get(probe["probe"], probe["probe"]),
            f"{probe['before']:.3g}",
            after_text,
            "lower" if probe["probe"] == "perplexity" else "higher",
        )
    console.print(table)
    console.print(
        "win-rate vs the reference (rule judge: correct beats wrong, then "
        f"clearly shorter wins): {wins['win_rate']:.3f} "
        f"(95% CI {wins['ci_low']:.3f}-{wins['ci_high']:.3f}; {wins['wins']} "
        f"wins, {wins['ties']} ties, {wins['losses']} losses)"
    )


def print_dpo_metrics(console: Console, train: dict, evaluation: dict) -> None:
    """Print the last training log's and the held-out pairs' DPO metrics side by side."""
    table = Table(title="Final DPO metrics")
    for column in ("metric", "train (last log)", "eval (held-out pairs)"):
        table.add_column(column)
    for key in PREFERENCE_SUMMARY_KEYS:
        table.add_row(key, _fmt(train.get(key)), _fmt(evaluation.get(f"eval/{key}")))
    console.print(table)


def print_verdict(console: Console, problems: list[str], wins: dict, run_dir: Path) -> None:
    """Red and named when anything regressed; green only when nothing did and the aligned model wins."""
    if problems:
        console.print("[bold red]The aligned model REGRESSED; do not use it as it is:[/bold red]")
        for problem in problems:
            console.print(f"[red]  - {problem}[/red]")
        console.print(
            f"[red]Inspect {run_dir / 'demo_answers.jsonl'}; try a lower "
            "learning_rate, a higher beta or fewer steps.[/red]"
        )
    elif wins["win_rate"] > 0.5:
        console.print(
            f"[bold green]Aligned: it beats the reference on held-out prompts (win-rate {wins['win_rate']:.2f}) "
            "with no capability regression.[/bold green]"
        )
    else:
        console.print(
            "[yellow]No regression, but no clear gain either (win-rate "
            f"{wins['win_rate']:.2f} vs the reference).[/yellow]"
        )


def _styled(before: float, after: float, higher_is_better: bool) -> str:
    if math.isnan(after) or math.isnan(before) or after == before:
        return _fmt(after)
    style = "green" if (after > before) == higher_is_better else "red"
    return f"[{style}]{_fmt(after)}[/{style}]"


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
