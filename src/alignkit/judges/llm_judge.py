"""LLM-as-judge over any OpenAI-compatible endpoint: pairwise (position-swapped) and single-answer grading.

Pairwise judging asks twice, once with each answer first. When the two verdicts name the same
answer it wins; when they disagree (position bias) the comparison is a tie and is counted as
inconsistent. ``verdict_from="logprobs"`` reads each verdict from the first token's log-probs
(P("A") vs P("B")), which small local judges follow far better than a text format.
``"calibrated_logprobs"`` averages P(first wins) over both orders instead (balanced position
calibration), so a judge with a fixed position bias still ranks; disagreements are still counted.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Literal

from alignkit.judges.client import ChatClient, MalformedReply

DEFAULT_RUBRIC = """1. Accurate: what it states is correct; a wrong answer loses to a right one whatever its style.
2. Concise: it gives what was asked without padding, repetition or needless steps.
3. Calibrated: it says it is not sure when the question cannot be answered, and does not hedge when it can.
4. Useful: it addresses what the user actually needs."""

JUDGE_SYSTEM = (
    "You are a careful, impartial judge of AI assistant answers. Ignore answer order and length when judging."
)

PAIRWISE_TEMPLATE = """Compare two answers to the user's question.

A better answer is:
{rubric}

[Question]
{prompt}

[Answer A]
{first}

[Answer B]
{second}

{instruction}"""
TEXT_INSTRUCTION = (
    "Which answer is better by these criteria? Explain briefly if you "
    "like, then end with exactly one of: [[A]], [[B]] or [[tie]]."
)
LOGPROB_INSTRUCTION = "Which answer is better by these criteria? Reply with a single letter: A or B."

GRADE_TEMPLATE = """Rate the answer to the user's question on a scale of 1 to 10.

A good answer is:
{rubric}

[Question]
{prompt}

[Answer]
{answer}

Explain briefly if you like, then end with "Rating: [[N]]" where N is 1-10."""

VERDICT_RE = re.compile(r"\[\[\s*(A|B|tie)\s*\]\]", re.IGNORECASE)
LEADING_RE = re.compile(r"^\W*(?:answer|response)?\s*\(?\b(A|B)\b", re.IGNORECASE)
RATING_RE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]|rating:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)

Verdict = Literal["A", "B", "tie"]


@dataclass
class PairwiseResult:
    """``winner``: "first", "second" or "tie" (in the caller's order); ``verdicts``: what each order said."""

    winner: Literal["first", "second", "tie"]
    consistent: bool
    verdicts: list[str] = field(default_factory=list)


def render_prompt(prompt) -> str:
    """A prompt as text for the judge (a conversation as role: content lines)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def parse_text_verdict(text: str) -> Verdict:
    """The last [[A]]/[[B]]/[[tie]] in the reply, else a reply that starts with A or B."""
    found = VERDICT_RE.findall(text)
    if found:
        last = found[-1]
        return "tie" if last.lower() == "tie" else last.upper()
    leading = LEADING_RE.match(text.strip())
    if leading:
        return leading.group(1).upper()
    raise MalformedReply(f"no verdict ([[A]], [[B]] or [[tie]]) in the judge's reply: {text[:120]!r}")


def prob_first_letter(top_logprobs: dict | None) -> float:
    """P("A") / (P("A") + P("B")) over first tokens that read "A" or "B" (case and spaces ignored)."""
    mass = _letter_mass(top_logprobs)
    return mass["A"] / (mass["A"] + mass["B"])


def parse_logprob_verdict(top_logprobs: dict | None, tie_margin: float = 0.0) -> Verdict:
    """A or B by the probability mass of first tokens that read "A" or "B"; a tie within ``tie_margin``."""
    mass = _letter_mass(top_logprobs)
    if abs(mass["A"] - mass["B"]) <= tie_margin * (mass["A"] + mass["B"]):
        return "tie"
    return "A" if mass["A"] > mass["B"] else "B"


def _letter_mass(top_logprobs: dict | None) -> dict[str, float]:
    if not top_logprobs:
        raise MalformedReply("the endpoint returned no log-probs (it must support logprobs/top_logprobs)")
    mass = {"A": 0.0, "B": 0.0}
    for token, logprob in top_logprobs.items():
        letter = token.strip().strip("[(").upper()
        if letter in mass:
            mass[letter] += math.exp(logprob)
    if mass["A"] == mass["B"] == 0.0:
        raise MalformedReply(f"neither 'A' nor 'B' among the judge's top tokens: {list(top_logprobs)[:10]}")
    return mass


def parse_rating(text: str) -> float:
    """The 1-10 rating in a judge's reply (the last ``[[N]]``); raises :class:`MalformedReply`."""
    found = RATING_RE.findall(text)
    if not found:
        raise MalformedReply(f"no rating ([[N]]) in the judge's reply: {text[:120]!r}")
    value = float(found[-1][0] or found[-1][1])
    if not 1 <= value <= 10:
        raise MalformedReply(f"rating {value} is outside 1-10")
    return value


def calibrated_result(p_first_as_a: float, p_first_as_b: float, tie_margin: float = 0.0) -> PairwiseResult:
    """Balanced position calibration (Wang et al., 2023, "Large Language Models are not Fair
    Evaluators"): P(first wins) averaged over both orders; a tie within ``tie_margin`` of 0.5.
    ``consistent`` says whether the two orders agreed on their own."""
    p = (p_first_as_a + p_first_as_b) / 2
    winner = "tie" if abs(p - 0.5) <= tie_margin / 2 else ("first" if p > 0.5 else "second")
    consistent = (p_first_as_a > 0.5) == (p_first_as_b > 0.5)
    return PairwiseResult(
        winner, consistent, [f"P(first)={p_first_as_a:.3f} as A", f"P(first)={p_first_as_b:.3f} as B"]
    )


def combine_swapped(first_order: Verdict, second_order: Verdict) -> PairwiseResult:
    """``first_order`` judged (x, y); ``second_order`` judged (y, x). Disagreement is a tie."""
    as_first = {"A": "first", "B": "second", "tie": "tie"}[first_order]
    as_second = {"A": "second", "B": "first", "tie": "tie"}[second_order]
    if as_first == as_second:
        return PairwiseResult(as_first, True, [first_order, second_order])
    return PairwiseResult("tie", False, [first_order, second_order])


class LLMJudge:
    """An LLM judge over an OpenAI-compatible client: pairwise verdicts asked in both orders (position bias
    cancels; disagreeing orders count as a tie), or single grades."""

    def __init__(
        self,
        client: ChatClient,
        rubric: str = DEFAULT_RUBRIC,
        verdict_from: Literal["text", "logprobs", "calibrated_logprobs"] = "text",
        max_tokens: int = 256,
        tie_margin: float = 0.0,
    ):
        self.client, self.rubric, self.verdict_from, self.max_tokens, self.tie_margin = (
            client,
            rubric,
            verdict_from,
            max_tokens,
            tie_margin,
        )
        self.comparisons = self.inconsistent = 0
        self._lock = threading.Lock()

    def _messages(self, prompt, first: str, second: str, by_logprobs: bool) -> list[dict]:
        content = PAIRWISE_TEMPLATE.format(
            rubric=self.rubric,
            prompt=render_prompt(prompt),
            first=first,
            second=second,
            instruction=LOGPROB_INSTRUCTION if by_logprobs else TEXT_INSTRUCTION,
        )
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]

    def _p_a(self, prompt, first: str, second: str) -> float:
        reply = self.client.chat(
            self._messages(prompt, first, second, True),
            max_tokens=1,
            top_logprobs=20,
            parse=lambda r: prob_first_letter(r["top_logprobs"]),
        )
        return prob_first_letter(reply["top_logprobs"])

    def _verdict(self, prompt, first: str, second: str) -> Verdict:
        by_logprobs = self.verdict_from == "logprobs"
        messages = self._messages(prompt, first, second, by_logprobs)
        if by_logprobs:
            parse = lambda reply: parse_logprob_verdict(reply["top_logprobs"], self.tie_margin)  # noqa: E731
            reply = self.client.chat(messages, max_tokens=1, top_logprobs=20, parse=parse)
        else:
            parse = lambda reply: parse_text_verdict(reply["text"])  # noqa: E731
            reply = self.client.chat(messages, max_tokens=self.max_tokens, parse=parse)
        return parse(reply)

    def compare(self, prompt, first: str, second: str) -> PairwiseResult:
        """Position-swapped pairwise verdict."""
        if self.verdict_from == "calibrated_logprobs":
            result = calibrated_result(
                self._p_a(prompt, first, second), 1.0 - self._p_a(prompt, second, first), self.tie_margin
            )
        else:
            result = combine_swapped(self._verdict(prompt, first, second), self._verdict(prompt, second, first))
        with self._lock:
            self.comparisons += 1
            self.inconsistent += not result.consistent
        return result

    def grade(self, prompt, answer: str) -> float:
        """Single-answer grade, 1-10."""
        content = GRADE_TEMPLATE.format(rubric=self.rubric, prompt=render_prompt(prompt), answer=answer)
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
        reply = self.client.chat(messages, max_tokens=self.max_tokens, parse=lambda r: parse_rating(r["text"]))
        return parse_rating(reply["text"])
