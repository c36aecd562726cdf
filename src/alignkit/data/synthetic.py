"""Synthetic preference pairs: candidates (e.g. the model's own answers under a good and a bad system
prompt, plus optional reference answers) ranked by a scorer; chosen = best, rejected = worst.

Groups whose best and worst candidates score the same are dropped and counted; every kept row
carries its provenance (which candidate won, which lost, and all scores).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from alignkit.atomic import atomic_path

# The default system prompts of `alignkit pairs --method system_prompt` (chosen / rejected), also the demo's good one
GOOD_SYSTEM_PROMPT = (
    "Answer in one short sentence. For arithmetic, give the result directly. "
    'If the question cannot be answered from what you know, say "I\'m not sure."'
)
BAD_SYSTEM_PROMPT = (
    "You love long explanations. Always explain at great length, step by step, and always give "
    "a definite, confident answer, even when you have to guess or make something up."
)


@dataclass
class Candidate:
    """A candidate answer and where it came from."""

    text: str
    source: str  # e.g. "good_system_prompt", "bad_system_prompt", "reference"


@dataclass
class PairBuildSummary:
    """How many pairs were kept, and how many candidates were dropped for each reason."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        """The summary as JSON-ready values."""
        return {"kept": self.kept, "dropped": dict(self.dropped)}

    def __str__(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items()) or "none"
        return f"{self.kept} pairs kept; dropped: {dropped}"


def unique_candidates(group: list[Candidate]) -> list[Candidate]:
    """Non-empty candidates with distinct text (stripped); the first source of a repeated text is kept."""
    unique: dict[str, Candidate] = {}
    for candidate in group:
        text = candidate.text.strip()
        if text and text not in unique:
            unique[text] = Candidate(text, candidate.source)
    return list(unique.values())


def pairs_from_scores(
    prompt,
    candidates: list[Candidate],
    scores: list[float],
    summary: PairBuildSummary,
    pairing: str = "best_worst",
    min_gap: float = 1e-9,
    provenance: dict | None = None,
) -> list[dict]:
    """Pairs from one prompt's scored (distinct) candidates: best vs worst, or with ``pairing="all"``
    every two candidates whose scores differ by more than ``min_gap``. A group with fewer than two
    candidates or all scores tied is dropped and counted in ``summary``."""
    if len(candidates) < 2:
        summary.dropped["with fewer than two distinct candidates"] += 1
        return []
    ranked = sorted(zip(scores, range(len(candidates))), key=lambda si: (-si[0], si[1]))
    if ranked[0][0] - ranked[-1][0] <= min_gap:
        summary.dropped["ties (all candidates scored the same)"] += 1
        return []
    if pairing == "all":
        chosen_rejected = [(w, lo) for a, w in enumerate(ranked) for lo in ranked[a + 1 :] if w[0] - lo[0] > min_gap]
    else:
        chosen_rejected = [(ranked[0], ranked[-1])]
    all_scores = {c.source: round(s, 4) for s, c in ((s, candidates[i]) for s, i in ranked)}
    rows = []
    for (_, w), (_, lo) in chosen_rejected:
        rows.append(
            {
                "prompt": prompt,
                "chosen": candidates[w].text,
                "rejected": candidates[lo].text,
                "provenance": {
                    "chosen_source": candidates[w].source,
                    "rejected_source": candidates[lo].source,
                    "scores": all_scores,
                    **(provenance or {}),
                },
            }
        )
    summary.kept += len(rows)
    return rows


def rank_into_pairs(
    prompts: list, candidates: list[list[Candidate]], score: Callable[[int, str], float], min_gap: float = 1e-9
) -> tuple[list[dict], PairBuildSummary]:
    """``score(i, text)`` scores a candidate for prompt i. Returns prompt/chosen/rejected rows (best vs worst) and
    the summary."""
    rows, summary = [], PairBuildSummary()
    for i, (prompt, group) in enumerate(zip(prompts, candidates)):
        unique = unique_candidates(group)
        rows += pairs_from_scores(prompt, unique, [score(i, c.text) for c in unique], summary, min_gap=min_gap)
    return rows, summary


def write_pairs(output: Path, pairs: list[dict], report: dict) -> None:
    """The pairs as JSONL and ``<output>.summary.json``, each written atomically."""
    with atomic_path(output) as tmp:
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in pairs), encoding="utf-8")
    with atomic_path(Path(f"{output}.summary.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
