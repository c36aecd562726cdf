"""Synthetic preference pairs: candidates (e.g. the model's own answers under a good and a bad system
prompt, plus optional reference answers) ranked by a scorer; chosen = best, rejected = worst.

Groups whose best and worst candidates score the same are dropped and counted; every kept row
carries its provenance (which candidate won, which lost, and all scores).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Candidate:
    text: str
    source: str  # e.g. "good_system_prompt", "bad_system_prompt", "reference"


@dataclass
class PairBuildSummary:
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items()) or "none"
        return f"{self.kept} pairs kept; dropped: {dropped}"


def rank_into_pairs(prompts: list, candidates: list[list[Candidate]], score: Callable[[int, str], float], min_gap: float = 1e-9) -> tuple[list[dict], PairBuildSummary]:
    """``score(i, text)`` scores a candidate for prompt i. Returns prompt/chosen/rejected rows + summary."""
    rows, summary = [], PairBuildSummary()
    for i, (prompt, group) in enumerate(zip(prompts, candidates)):
        unique = {c.text.strip(): c for c in group if c.text.strip()}
        if len(unique) < 2:
            summary.dropped["with fewer than two distinct candidates"] += 1
            continue
        scored = sorted(((score(i, c.text), c) for c in unique.values()), key=lambda sc: sc[0], reverse=True)
        (best_score, best), (worst_score, worst) = scored[0], scored[-1]
        if best_score - worst_score <= min_gap:
            summary.dropped["ties (all candidates scored the same)"] += 1
            continue
        rows.append({
            "prompt": prompt,
            "chosen": best.text.strip(),
            "rejected": worst.text.strip(),
            "provenance": {"chosen_source": best.source, "rejected_source": worst.source, "scores": {c.source: round(s, 4) for s, c in scored}},
        })
        summary.kept += 1
    return rows, summary
