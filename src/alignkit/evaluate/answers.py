"""Answer-quality metrics on short-answer tasks (accuracy per kind, calibrated uncertainty, length,
degeneration) and the rule judge that compares two models' answers to the same task."""

from __future__ import annotations

from alignkit.evaluate.winrate import Outcome
from alignkit.judges.verifiers import (
    ShortAnswerTask,
    is_correct,
    is_degenerate,
    says_not_sure,
    word_count,
)

CLEARLY_SHORTER = 2 / 3  # an answer is clearly shorter when it has at most this fraction of the other's words


def answer_metrics(
    tasks: list[ShortAnswerTask], responses: list[str], finished: list[bool] | None = None
) -> dict[str, float]:
    """accuracy: arithmetic prompts answered correctly; knowledge_accuracy: general-knowledge prompts
    answered correctly; not_sure_rate: unanswerable prompts where the model says it is not sure;
    false_not_sure_rate: answerable prompts it wrongly declines; mean_words: mean reply length in
    words; degenerate: replies that loop (a phrase repeated over and over); with ``finished`` (did
    each reply end within the token limit), runaway: replies that ran into the limit. A kind with
    no prompt gives nan."""
    if len(tasks) != len(responses) or not tasks:
        raise ValueError("answer_metrics needs one response per task (and at least one task)")
    of_kind = {
        kind: [(t, r) for t, r in zip(tasks, responses) if t.kind == kind]
        for kind in ("arithmetic", "knowledge", "unanswerable")
    }
    return {
        "accuracy": _mean([is_correct(t, r) for t, r in of_kind["arithmetic"]]),
        "knowledge_accuracy": _mean([is_correct(t, r) for t, r in of_kind["knowledge"]]),
        "not_sure_rate": _mean([says_not_sure(r) for _, r in of_kind["unanswerable"]]),
        "false_not_sure_rate": _mean([says_not_sure(r) for t, r in zip(tasks, responses) if t.answerable]),
        "mean_words": _mean([word_count(r) for r in responses]),
        "degenerate": float(sum(is_degenerate(r) for r in responses)),
        **({"runaway": float(sum(not f for f in finished))} if finished is not None else {}),
    }


def rule_outcome(task: ShortAnswerTask, mine: str, theirs: str) -> Outcome:
    """A correct answer beats a wrong one ("not sure" is correct only where nothing could be known);
    between two correct answers, a clearly shorter one wins; anything else (two wrong answers, or
    two correct ones of similar length) is a tie."""
    mine_right, theirs_right = is_correct(task, mine), is_correct(task, theirs)
    if mine_right != theirs_right:
        return "win" if mine_right else "loss"
    if not mine_right:
        return "tie"
    mine_words, theirs_words = word_count(mine), word_count(theirs)
    if mine_words <= CLEARLY_SHORTER * theirs_words:
        return "win"
    if theirs_words <= CLEARLY_SHORTER * mine_words:
        return "loss"
    return "tie"


def _mean(values: list) -> float:
    return sum(float(v) for v in values) / len(values) if values else float("nan")
