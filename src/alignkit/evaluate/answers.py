"""Answer-quality metrics on short-answer tasks (accuracy, calibrated uncertainty, length)."""
from __future__ import annotations

from alignkit.judges.verifiers import ShortAnswerTask, is_correct, says_not_sure, word_count


def answer_metrics(tasks: list[ShortAnswerTask], responses: list[str]) -> dict[str, float]:
    """accuracy: answerable prompts answered correctly; not_sure_rate: unanswerable prompts where the
    model says it is not sure; false_not_sure_rate: answerable prompts it wrongly declines;
    mean_words: mean reply length in words."""
    if len(tasks) != len(responses) or not tasks:
        raise ValueError("answer_metrics needs one response per task (and at least one task)")
    answerable = [(t, r) for t, r in zip(tasks, responses) if t.answerable]
    unanswerable = [(t, r) for t, r in zip(tasks, responses) if not t.answerable]
    return {
        "accuracy": _mean([is_correct(t, r) for t, r in answerable]),
        "not_sure_rate": _mean([says_not_sure(r) for _, r in unanswerable]),
        "false_not_sure_rate": _mean([says_not_sure(r) for _, r in answerable]),
        "mean_words": _mean([word_count(r) for r in responses]),
    }


def _mean(values: list) -> float:
    return sum(float(v) for v in values) / len(values) if values else float("nan")
