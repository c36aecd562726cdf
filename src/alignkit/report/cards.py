"""What a person wants first from a run: a verdict, and answers to read.

- :func:`verdict` reads the demo's ``demo_results.json`` (its own verdict: aligned, or what regressed) or
  ``eval``'s results (win-rate with its interval, probes that regressed), and the symptoms that fired.
- :func:`answers` samples what the run's models said, worst first: the demo's before/after answers
  (losses first), ``eval``'s judged pairs (``winrate.jsonl``), or RL's sampled responses (lowest reward first).
"""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.log_files import read_jsonl

OUTCOME_ORDER = {"loss": 0, "tie": 1, "win": 2}
SHOWN = 8  # answers shown per run


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return read_jsonl(path)


def verdict(path: Path, eval_results: dict | None, symptoms: list[dict]) -> dict | None:
    """``{"status": aligned|regressed|measured, "headline", "details": [...], "symptoms": [...]}``, or None when
    the run holds nothing to judge it by (no demo results, no eval results, no symptoms)."""
    details: list[str] = []
    status, headline = "measured", ""
    demo = path / "demo_results.json"
    if demo.is_file():
        results = json.loads(demo.read_text())
        problems = results.get("problems") or []
        win = results.get("win_rate") or {}
        status = "regressed" if problems else "aligned" if win.get("win_rate", 0) > 0.5 else "measured"
        headline = {"regressed": "Regressed", "aligned": "Aligned", "measured": "Not better than the reference"}[status]
        if win:
            details.append(
                f"rule-judge win-rate {win.get('win_rate', 0):.3f} ({win.get('wins')} wins, {win.get('ties')} ties, "
                f"{win.get('losses')} losses)"
            )
        details += [f"regressed: {p}" for p in problems]
        details += [
            f"probe {p['probe']}: {p['before']:.3f} -> {p['after']:.3f}{' (regressed)' if p.get('regressed') else ''}"
            for p in results.get("probes") or []
        ]
    elif eval_results:
        win = eval_results.get("win_rate") or {}
        regressed = [p for p in eval_results.get("probes") or [] if p.get("regressed")]
        status = "regressed" if regressed else "aligned" if win.get("ci_low", 0) > 0.5 else "measured"
        headline = {"regressed": "Regressed", "aligned": "Better than the reference", "measured": "Evaluated"}[status]
        if win:
            details.append(
                f"win-rate {win['win_rate']:.3f} (95% CI {win['ci_low']:.3f}-{win['ci_high']:.3f}, {win['n']} prompts,"
                f" judge {win['judge']})"
            )
        details += [f"probe {p['probe']} regressed: {p['before']:.3f} -> {p['after']:.3f}" for p in regressed]
    elif not symptoms:
        return None
    fired = [f"step {s['step']}: {s['symptom']} ({s['message']})" for s in symptoms]
    if fired and status == "measured" and not headline:
        status, headline = "regressed", "Symptoms fired"
    return {"status": status, "headline": headline or "Trained", "details": details, "symptoms": fired}


def answers(path: Path) -> dict | None:
    """``{"source", "columns", "rows"}``: up to ``SHOWN`` answers, worst first (None when the run has none)."""
    demo = _jsonl(path / "demo_answers.jsonl")
    if demo:
        demo.sort(key=lambda r: OUTCOME_ORDER.get(str(r.get("outcome")), 1))
        rows = [[r["kind"], r["prompt"], r["before"], r["after"], r.get("outcome", "")] for r in demo[:SHOWN]]
        return {
            "source": "demo_answers.jsonl",
            "columns": ["kind", "prompt", "before", "after", "outcome"],
            "rows": rows,
        }
    judged = _jsonl(path / "eval" / "winrate.jsonl") or _jsonl(path / "winrate.jsonl")
    if judged:
        judged.sort(key=lambda r: OUTCOME_ORDER.get(str(r.get("outcome")), 1))
        rows = [[r["prompt"], r["reference"], r["model"], r.get("outcome", "")] for r in judged[:SHOWN]]
        return {"source": "winrate.jsonl", "columns": ["prompt", "reference", "model", "outcome"], "rows": rows}
    samples = _jsonl(path / "samples.jsonl")
    if samples:
        last = max(r["step"] for r in samples)
        latest = sorted((r for r in samples if r["step"] == last), key=lambda r: r["score"])
        rows = [[r["step"], r["prompt"], r["response"], r["score"]] for r in latest[:SHOWN]]
        return {"source": "samples.jsonl", "columns": ["step", "prompt", "response", "reward"], "rows": rows}
    return None
