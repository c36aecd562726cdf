"""Verifiers for short-answer tasks: exact numeric answers and calibrated "not sure" replies."""
from __future__ import annotations

import re
from dataclasses import dataclass

NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
NOT_SURE_RE = re.compile(
    r"\b(not sure|unsure|don'?t know|do not know|can(?:'t|not) (?:be )?(?:know|determine|tell|answer)|"
    r"no way (?:of|to) know|unable to (?:know|determine|tell)|not possible to (?:know|determine|tell)|"
    r"have no (?:way|information|access)|i'?m uncertain|no idea)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ShortAnswerTask:
    """A prompt with a verifiable answer (``answer`` set) or none that can be known (``answer`` None)."""

    prompt: str
    answer: int | None
    reference: str  # a correct, concise reply

    @property
    def answerable(self) -> bool:
        return self.answer is not None


def final_number(text: str) -> float | None:
    """The last number in ``text`` (commas ignored), or None."""
    matches = NUMBER_RE.findall(text)
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


def says_not_sure(text: str) -> bool:
    return bool(NOT_SURE_RE.search(text))


def word_count(text: str) -> int:
    return len(text.split())


def is_correct(task: ShortAnswerTask, response: str) -> bool:
    """Answerable: the final number equals the answer and the reply does not hedge.
    Unanswerable: the reply says it is not sure."""
    if task.answerable:
        return not says_not_sure(response) and final_number(response) == task.answer
    return says_not_sure(response)


def verifier_score(task: ShortAnswerTask, response: str, words_penalty: float = 0.005) -> float:
    """1 for a correct reply, 0 otherwise, minus a small per-word cost so concise beats verbose."""
    return float(is_correct(task, response)) - words_penalty * word_count(response)
