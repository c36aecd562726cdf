"""Verifiers for short-answer tasks: exact numeric answers, named answers (a word or phrase that must
appear), calibrated "not sure" replies, and degenerate replies (a phrase repeated over and over)."""

from __future__ import annotations

import re
import string
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
    """A prompt with a verifiable answer (``answer`` set) or none that can be known (``answer`` None).

    A numeric answer must be the reply's final number; a text answer (or one of ``aliases``) must
    appear in the reply as whole words, case-insensitively."""

    prompt: str
    answer: int | str | None
    reference: str  # a correct, concise reply
    aliases: tuple[str, ...] = ()

    @property
    def answerable(self) -> bool:
        """Whether the question has a known answer (else a good reply says it cannot know)."""
        return self.answer is not None

    @property
    def kind(self) -> str:
        """ "unanswerable" (no answer), "arithmetic" (a numeric answer) or "knowledge" (a named answer)."""
        return (
            "unanswerable" if self.answer is None else ("knowledge" if isinstance(self.answer, str) else "arithmetic")
        )


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
    """Whether ``text`` admits not knowing."""
    return bool(NOT_SURE_RE.search(text))


def word_count(text: str) -> int:
    """The number of whitespace-separated words."""
    return len(text.split())


ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, no punctuation, no articles, single spaces (as SQuAD-style exact match does)."""
    text = "".join(ch for ch in str(text).lower() if ch not in string.punctuation)
    return " ".join(ARTICLES.sub(" ", text).split())


def contains_answer(response: str, answer) -> bool:
    """``answer`` occurs in ``response`` as whole words, after both are normalised."""
    return f" {normalize_answer(answer)} " in f" {normalize_answer(response)} "


def is_correct(task: ShortAnswerTask, response: str) -> bool:
    """Answerable: the reply gives the answer (final number, or the named answer) and does not hedge.
    Unanswerable: the reply says it is not sure."""
    if not task.answerable:
        return says_not_sure(response)
    if says_not_sure(response):
        return False
    if isinstance(task.answer, str):
        return any(contains_answer(response, a) for a in (task.answer, *task.aliases))
    return final_number(response) == task.answer


def repeated_phrase(text: str, n: int = 3, times: int = 3) -> str | None:
    """The first run of ``n`` words that occurs ``times`` times or more in ``text`` (punctuation and
    case ignored), or None."""
    words = re.findall(r"[\w']+", text.lower())
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return " ".join(gram)
    return None


def is_degenerate(text: str) -> bool:
    """A reply that loops: a two-word phrase four times or more, or a four-word phrase three times."""
    return repeated_phrase(text, 2, 4) is not None or repeated_phrase(text, 4, 3) is not None


def verifier_score(task: ShortAnswerTask, response: str, words_penalty: float = 0.005) -> float:
    """1 for a correct reply, 0 otherwise, minus a small per-word cost so concise beats verbose."""
    return float(is_correct(task, response)) - words_penalty * word_count(response)
