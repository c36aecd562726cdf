"""The demo's preference pairs: the reference model's own answers (with no system prompt, as it
answers users, and under a good system prompt) and known-good replies, ranked by the verifier
(correct first, then shorter).

Rejected answers are on-policy: the model's own default answer is what it would say without help,
so pushing it down changes what the model does by default (answers written under a "bad" system
prompt are so unlikely without that prompt that pushing them down teaches little).

- arithmetic and unanswerable prompts: best vs worst of {good answer, own answer, reference reply};
- hedge pairs: on one answerable arithmetic prompt in ``hedge_every``, the reference reply is
  preferred over "I'm not sure", so the model learns to decline only what cannot be known;
- retention pairs on general-knowledge prompts: the model's *own* correct answer (the shorter one
  when both are right) is preferred over a hedge, or over a wrong or rambling answer; prompts it never
  answers correctly are left out (nothing to retain, and teaching facts is not the lesson). Its own
  words, not a terse reference ("Oslo."): the small model recalls facts through its own phrasing
  ("The capital of Norway is Oslo."), and terse chosen answers cost it half its held-out knowledge.
"""

from __future__ import annotations

from collections import Counter

from alignkit.commands.demo.tasks import NOT_SURE_REPLY
from alignkit.data.synthetic import (
    Candidate,
    PairBuildSummary,
    pairs_from_scores,
    unique_candidates,
)
from alignkit.judges.verifiers import ShortAnswerTask, is_correct, verifier_score

HEDGE_PAIR_EVERY = 10


def demo_pairs(
    tasks: list[ShortAnswerTask],
    good: list[str],
    own: list[str],
    hedge_every: int = HEDGE_PAIR_EVERY,
    retention: bool = True,
) -> tuple[list[dict], PairBuildSummary]:
    """Training pairs (with ``provenance.kind``) from the answers under the good system prompt and
    the model's own (default) answers, and the summary of what was kept and dropped.
    ``hedge_every`` 0: no hedge pairs; ``retention`` False: no general-knowledge pairs."""
    summary = PairBuildSummary()
    rows: list[dict] = []
    arithmetic_seen = 0
    for task, good_answer, own_answer in zip(tasks, good, own):
        model_answers = [Candidate(good_answer, "good_system_prompt"), Candidate(own_answer, "own_answer")]
        if task.kind == "knowledge":
            if not retention:
                summary.dropped["knowledge prompts (retention pairs off)"] += 1
                continue
            if not any(is_correct(task, c.text) for c in model_answers):
                summary.dropped["knowledge prompts the model never answers correctly"] += 1
                continue
            group = model_answers + [Candidate(NOT_SURE_REPLY, "hedge")]
        else:
            group = model_answers + [Candidate(task.reference, "reference")]
        rows += _ranked(task, group, summary)
        if task.kind == "arithmetic":
            if hedge_every and arithmetic_seen % hedge_every == 0:
                rows += _ranked(
                    task, [Candidate(task.reference, "reference"), Candidate(NOT_SURE_REPLY, "hedge")], summary, "hedge"
                )
            arithmetic_seen += 1
    return rows, summary


def heldout_pairs(tasks: list[ShortAnswerTask], before: list[str]) -> list[dict]:
    """Held-out pairs for the trainer's eval metrics: the reference reply vs the model's own answer."""
    summary = PairBuildSummary()
    return [
        row
        for task, answer in zip(tasks, before)
        for row in _ranked(
            task, [Candidate(answer, "reference_model"), Candidate(task.reference, "reference")], summary
        )
    ]


def pair_mix(rows: list[dict]) -> Counter:
    """How many pairs of each kind, e.g. {"arithmetic": 81, "hedge": 9, "knowledge": 40, ...}."""
    return Counter(row["provenance"]["kind"] for row in rows)


def _ranked(
    task: ShortAnswerTask, group: list[Candidate], summary: PairBuildSummary, kind: str | None = None
) -> list[dict]:
    unique = unique_candidates(group)
    return pairs_from_scores(
        task.prompt,
        unique,
        [verifier_score(task, c.text) for c in unique],
        summary,
        provenance={"kind": kind or task.kind},
    )
