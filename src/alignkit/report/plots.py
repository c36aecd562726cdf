"""Report figures (matplotlib, headless): training curves with symptom markers, win-rate with its
interval, capability probes before/after. Each returns PNG bytes."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SKIP = {"step", "epoch"}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def metric_series(records: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{metric: {"train": [(step, value)], "eval": [(step, value)]}}`` for every numeric metric."""
    series: dict[str, dict[str, list]] = {}
    for record in records:
        if "symptom" in record:
            continue
        for key, value in record.items():
            if key in SKIP or isinstance(value, bool):
                continue
            number = _number(value)
            if number is None:
                continue
            split, name = ("eval", key[5:]) if key.startswith("eval/") else ("train", key)
            series.setdefault(name, {"train": [], "eval": []})[split].append((record["step"], number))
    return series


def _number(value) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf"):
        return float(value)
    return None


def worth_a_panel(points: dict[str, list]) -> bool:
    """A metric with a curve to draw: at least two values, not all zero (one-value summaries such as
    train_runtime, or a counter that never moved, would be empty or flat axes)."""
    values = [v for split in ("train", "eval") for _, v in points[split]]
    return (len(points["train"]) > 1 or len(points["eval"]) > 1) and any(v != 0 for v in values)


COMPARED = ("loss", "rewards/margins", "rewards/accuracies", "loss/total", "reward/score", "objective/kl")


def compare_runs(runs: dict[str, list[dict]], metrics: tuple[str, ...] = COMPARED) -> bytes | None:
    """A PNG comparing ``metrics`` across runs (None with fewer than two runs or no such metric)."""
    present = [m for m in metrics if any(m in r for records in runs.values() for r in records)]
    if len(runs) < 2 or not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3), squeeze=False)
    for ax, metric in zip(axes.flat, present):
        for name, records in runs.items():
            points = [
                (r["step"], _number(r[metric])) for r in records if metric in r and _number(r[metric]) is not None
            ]
            ax.plot([s for s, _ in points], [v for _, v in points], label=name)
        ax.set_title(metric, fontsize=9)
        ax.legend(fontsize=7)
    return _png(fig)


def win_rate_bar(win: dict) -> bytes:
    """A PNG bar of the win-rate with its interval, against the 0.5 line."""
    fig, ax = plt.subplots(figsize=(4.5, 2.2))
    ax.barh(
        [0],
        [win["win_rate"]],
        xerr=[[win["win_rate"] - win["ci_low"]], [win["ci_high"] - win["win_rate"]]],
        capsize=6,
        color="tab:blue",
    )
    ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    ax.set(xlim=(0, 1), yticks=[], xlabel="win-rate vs reference (95% CI)")
    return _png(fig)


def probe_bars(probes: list[dict]) -> bytes | None:
    """A PNG of each probe before and after (regressions in red); None without probes."""
    if not probes:
        return None
    fig, axes = plt.subplots(1, len(probes), figsize=(2.6 * len(probes), 2.6), squeeze=False)
    for ax, probe in zip(axes.flat, probes):
        color = "tab:red" if probe["regressed"] else "tab:green"
        ax.bar(["before", "after"], [probe["before"], probe["after"]], color=["tab:gray", color])
        ax.set_title(f"{probe['probe']} ({probe['metric']})", fontsize=9)
        ax.tick_params(labelsize=8)
    return _png(fig)


# The curves a person reads, grouped by what they tell (the first group of a kind of run is shown open,
# "system" folded away); a metric in no group lands in "other".
CURVE_GROUPS = {
    "preference: is it learning the preference?": (
        "loss",
        "rewards/margins",
        "rewards/accuracies",
        "rewards/chosen",
        "rewards/rejected",
        "nll_loss",
    ),
    "log-probs: what it does to chosen and rejected answers": (
        "logps/chosen",
        "logps/rejected",
        "logps/rejected_vs_ref_per_token",
        "kl",
        "log_odds_ratio",
    ),
    "RL: reward, drift from the reference, length": (
        "reward/score",
        "objective/kl",
        "response_length",
        "truncated_fraction",
        "objective/entropy",
        "loss/total",
    ),
    "reward model": ("accuracy", "margin"),
    "system: throughput, memory, learning rate": (
        "tokens_per_second",
        "samples_per_second",
        "step_time",
        "learning_rate",
        "grad_norm",
        "epoch",
    ),
}
# the metric each symptom is about: its marker goes on that panel only
SYMPTOM_METRIC = {
    "early_accuracy": "rewards/accuracies",
    "rejected_collapse": "logps/rejected_vs_ref_per_token",
    "flat_margins": "rewards/margins",
    "chosen_falling": "rewards/chosen",
    "eval_divergence": "rewards/margins",
    "nonfinite_loss": "loss",
    "reward_hacking_kl": "objective/kl",
    "length_runaway": "response_length",
}


def grouped_curves(records: list[dict], symptoms: list[dict]) -> list[tuple[str, bytes]]:
    """One figure per group of metrics that has curves to draw: (group title, PNG)."""
    series = {name: points for name, points in metric_series(records).items() if worth_a_panel(points)}
    grouped = {title: [n for n in names if n in series] for title, names in CURVE_GROUPS.items()}
    known = {n for names in CURVE_GROUPS.values() for n in names}
    grouped["other"] = sorted(n for n in series if n not in known)
    figures = []
    for title, names in grouped.items():
        if not names:
            continue
        cols = min(3, len(names))
        fig, axes = plt.subplots(
            math.ceil(len(names) / cols), cols, figsize=(4.2 * cols, 2.8 * math.ceil(len(names) / cols)), squeeze=False
        )
        for ax, name in zip(axes.flat, names):
            for split, style in (("train", "-"), ("eval", "o--")):
                points = series[name][split]
                if points:
                    ax.plot([p for p, _ in points], [v for _, v in points], style, label=split, markersize=4)
            for symptom in symptoms:
                if SYMPTOM_METRIC.get(symptom["symptom"], "loss" if name == "loss" else None) == name:
                    ax.axvline(symptom["step"], color="tab:red", lw=1, ls=":")
                    ax.annotate(
                        symptom["symptom"],
                        (symptom["step"], 0.95),
                        xycoords=("data", "axes fraction"),
                        color="tab:red",
                        fontsize=7,
                        ha="right",
                        rotation=90,
                        va="top",
                    )
            ax.set_title(name, fontsize=9)
            ax.tick_params(labelsize=7)
            if series[name]["eval"] and series[name]["train"]:
                ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        figures.append((title, _png(fig)))
    return figures
