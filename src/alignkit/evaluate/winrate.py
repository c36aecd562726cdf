"""Win-rate of a model against its reference: per-prompt outcomes from a judge, and a bootstrap
95% interval over prompts.

The score is ``(wins + ties / 2) / n``. With an LLM judge every comparison is asked in both orders
(position-swapped); orders that disagree count as a tie. Scorer judges (verifier, heuristic,
reward model) score each answer on its own, so order cannot matter; a higher score wins.
Identical answers are a tie without asking anyone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from tqdm.auto import tqdm

Outcome = Literal["win", "tie", "loss"]
POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass
class WinRate:
    """A win-rate with its bootstrap 95% interval and the counts behind it."""

    win_rate: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    n: int

    def as_dict(self) -> dict:
        """The fields as a dict."""
        return dict(self.__dict__)

    def __str__(self) -> str:
        return (
            f"{self.win_rate:.3f} (95% CI {self.ci_low:.3f}-{self.ci_high:.3f}; "
            f"{self.wins} wins, {self.ties} ties, {self.losses} losses of {self.n})"
        )


def win_rate(outcomes: list[Outcome], n_bootstrap: int = 1000, seed: int = 0) -> WinRate:
    """Point estimate and percentile bootstrap interval (resampling prompts with replacement)."""
    if not outcomes:
        raise ValueError("win_rate needs at least one outcome")
    points = [POINTS[o] for o in outcomes]
    n = len(points)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(points, k=n)) / n for _ in range(n_bootstrap))
    low = means[int(0.025 * (n_bootstrap - 1))] if n_bootstrap else float("nan")
    high = means[int(round(0.975 * (n_bootstrap - 1)))] if n_bootstrap else float("nan")
    return WinRate(sum(points) / n, low, high, outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss"), n)


def outcome_from_scores(model_score: float, reference_score: float, tolerance: float = 1e-9) -> Outcome:
    """Win, loss or tie from two scores."""
    if abs(model_score - reference_score) <= tolerance:
        return "tie"
    return "win" if model_score > reference_score else "loss"


def judge_outcomes(
    rows: list[dict],
    model_answers: list[str],
    reference_answers: list[str],
    judge=None,
    scorer=None,
    show_progress: bool = True,
) -> list[dict]:
    """One record per prompt: both answers, the outcome for the model, and what the judge said.

    ``judge``: an :class:`~alignkit.judges.llm_judge.LLMJudge` (pairwise, position-swapped; asked
    ``max_concurrency`` at a time); otherwise ``scorer`` (``score_group(row, responses)``) scores both answers.
    """

    def one(item) -> dict:
        row, mine, theirs = item
        record = {"prompt": row["prompt"], "model": mine, "reference": theirs}
        if mine.strip() == theirs.strip():
            record.update(outcome="tie", why="identical answers")
        elif judge is not None:
            result = judge.compare(row["prompt"], mine, theirs)
            record.update(
                outcome={"first": "win", "second": "loss", "tie": "tie"}[result.winner],
                verdicts=result.verdicts,
                consistent=result.consistent,
            )
        else:
            scores, detail = scorer.score_group(row, [mine, theirs])
            record.update(
                outcome=outcome_from_scores(scores[0], scores[1]),
                scores=scores,
                **({"detail": detail} if detail else {}),
            )
        return record

    items = list(zip(rows, model_answers, reference_answers))
    if judge is not None:
        return judge.client.map(items, one, desc="judging", show_progress=show_progress)
    return [one(item) for item in tqdm(items, desc="judging", disable=not show_progress, unit="prompt")]
