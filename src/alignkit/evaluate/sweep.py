"""``alignkit sweep config.yaml --beta 0.05,0.1,0.5,1.0``: one DPO run per beta, each evaluated.

Runs go one after another into ``<output_dir>/beta-<value>/`` (each a normal run directory with
its ``eval/``). Reference log-probs are precomputed once and reused from the cache by every run,
and the reference model's answers are generated once for all evaluations. The recommendation is
the beta with the best win-rate (reward accuracy when no judge applies) among runs whose
capability probes did not regress. ``--resume`` skips the betas already finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from alignkit.configs import DPOConfig, EvalConfig, SweepConfig
from alignkit.evaluate.run import evaluate_model
from alignkit.train.dpo import train_dpo
from alignkit.train.run_dir import prepare_run_dir


@dataclass
class SweepResult:
    """What ``alignkit sweep`` found: one row per beta, and the recommended beta (None: none held up)."""

    output_dir: Path
    rows: list[dict]
    recommended: float | None


def run_dir_for(root: Path, beta: float) -> Path:
    """The run directory of one beta."""
    return root / f"beta-{beta:g}"


def recommend(rows: list[dict]) -> tuple[float | None, str]:
    """The best beta among runs without a capability regression: by win-rate, else reward accuracy."""
    safe = [r for r in rows if not r["regressions"]]
    if not safe:
        return (
            None,
            "every beta regressed a capability probe; none is recommended (try a higher beta or a lower learning rate)",
        )
    if all(r["win_rate"] is not None for r in safe):
        best = max(safe, key=lambda r: (r["win_rate"], r["reward_accuracy"] or 0.0))
        return best["beta"], f"highest win-rate ({best['win_rate']:.3f}) among runs without capability regression"
    best = max(safe, key=lambda r: r["reward_accuracy"] or 0.0)
    return (
        best["beta"],
        f"highest held-out reward accuracy ({best['reward_accuracy']:.3f}) "
        "among runs without capability regression (no win-rate judge)",
    )


def summarize(beta: float, results: dict) -> dict:
    """One beta's row: win-rate and interval, reward accuracy, probe deltas, regressions."""
    win = results.get("win_rate") or {}
    accuracy = (results.get("reward_accuracy") or {}).get("accuracy")
    return {
        "beta": beta,
        "win_rate": win.get("win_rate"),
        "ci_low": win.get("ci_low"),
        "ci_high": win.get("ci_high"),
        "reward_accuracy": accuracy,
        "probes": {p["probe"]: p["delta"] for p in results.get("probes", [])},
        "regressions": results.get("regressions", []),
    }


def run_sweep(config: SweepConfig) -> SweepResult:
    """``alignkit sweep``: one DPO run per beta (reference log-probs computed once), each evaluated; writes a
    table and a plot and recommends the beta with the best win-rate among those without regressions."""
    console = Console(stderr=True)
    root = prepare_run_dir(config.output_dir, config.overwrite, config.resume)
    base = config.model_dump(exclude={"beta", "eval", "output_dir", "overwrite", "resume"})
    rows, reference_answers = [], None
    for i, beta in enumerate(config.beta, start=1):
        run_dir = run_dir_for(root, beta)
        results_file = run_dir / "eval" / "eval_results.json"
        console.rule(f"[bold]sweep {i}/{len(config.beta)}: beta {beta:g}")
        if config.resume and results_file.is_file():
            console.print(f"{run_dir} is finished; reusing its results", soft_wrap=True)
            results = json.loads(results_file.read_text())
        else:
            train_dpo(DPOConfig(**base, beta=beta, output_dir=str(run_dir), overwrite=True))
            eval_config = EvalConfig(
                **config.eval.model_dump(), model=str(run_dir), output_dir=str(run_dir / "eval"), overwrite=True
            )
            evaluation = evaluate_model(eval_config, reference_answers=reference_answers)
            reference_answers = evaluation.results.get("reference_answers") or reference_answers
            results = evaluation.results
        rows.append(summarize(beta, results))
    best, why = recommend(rows)
    summary = {"rows": rows, "recommended_beta": best, "why": why}
    (root / "sweep.json").write_text(json.dumps(summary, indent=1))
    plot_sweep(rows, root / "sweep.png", best)
    print_sweep(console, rows, best, why)
    return SweepResult(root, rows, best)


def print_sweep(console: Console, rows: list[dict], best: float | None, why: str) -> None:
    """Print the sweep's table and its recommendation."""
    table = Table(title="beta sweep")
    probes = sorted({name for r in rows for name in r["probes"]})
    for column in ["beta", "win-rate (95% CI)", "reward acc.", *[f"Δ {p}" for p in probes], "regressed"]:
        table.add_column(column)
    for r in rows:
        win = "-" if r["win_rate"] is None else f"{r['win_rate']:.3f} ({r['ci_low']:.2f}-{r['ci_high']:.2f})"
        acc = "-" if r["reward_accuracy"] is None else f"{r['reward_accuracy']:.3f}"
        mark = " *" if r["beta"] == best else ""
        table.add_row(
            f"{r['beta']:g}{mark}",
            win,
            acc,
            *[f"{r['probes'].get(p, float('nan')):+.3f}" for p in probes],
            ", ".join(r["regressions"]) or "no",
        )
    console.print(table)
    console.print(f"recommended beta: {'none' if best is None else f'{best:g}'} — {why}")


def plot_sweep(rows: list[dict], path: Path, best: float | None) -> None:
    """Plot win-rate and reward accuracy against beta (the recommended one marked) to ``path``."""
    matplotlib.use("Agg")
    betas = [r["beta"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    with_win = [r for r in rows if r["win_rate"] is not None]
    if with_win:
        x = [r["beta"] for r in with_win]
        y = [r["win_rate"] for r in with_win]
        err = [[r["win_rate"] - r["ci_low"] for r in with_win], [r["ci_high"] - r["win_rate"] for r in with_win]]
        axes[0].errorbar(x, y, yerr=err, marker="o", capsize=4)
        axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].set(title="win-rate vs reference (95% CI)", xlabel="beta", ylabel="win-rate", xscale="log")
    accuracy = [(r["beta"], r["reward_accuracy"]) for r in rows if r["reward_accuracy"] is not None]
    if accuracy:
        axes[1].plot([a for a, _ in accuracy], [b for _, b in accuracy], marker="o", color="tab:green")
    axes[1].axhspan(0.7, 0.9, color="tab:green", alpha=0.1)
    axes[1].set(title="held-out reward accuracy", xlabel="beta", ylabel="accuracy", xscale="log", ylim=(0, 1.05))
    for ax in axes:
        if best is not None:
            ax.axvline(best, color="tab:red", lw=1, ls=":")
        ax.set_xticks(betas, [f"{b:g}" for b in betas])
    for r in rows:
        if r["regressions"]:
            axes[1].annotate("regressed", (r["beta"], r["reward_accuracy"] or 0), color="tab:red", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
