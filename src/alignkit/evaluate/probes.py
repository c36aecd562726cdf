"""Capability regression probes: did alignment break what the model could already do?

- ``perplexity``: on held-out general text (a shipped passage, or the user's file); lower is better.
- ``arithmetic``: exact answers to small sums, differences and products (final number checked).
- ``facts``: short general-knowledge questions (the answer must appear in the reply).
- ``lm_eval``: lm-evaluation-harness tasks (MMLU, HumanEval, ...) through the optional
  ``alignkit[eval]`` extra, when the user has the tasks' data.

Each probe runs on the reference ("before") and the trained model ("after"); a regression is a
drop beyond a tolerance (accuracy) or a rise beyond a relative tolerance (perplexity).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from alignkit.engine.generation import generate_responses
from alignkit.errors import require
from alignkit.judges.scorers import answer_matches

GENERAL_TEXT = Path(__file__).with_name("general_text.txt")

FACTS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of the United Kingdom?", "London"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the chemical symbol for sodium?", "Na"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon dioxide"),
    ("How many days are there in a week?", "seven"),
    ("How many continents are there?", "seven"),
    ("What is the freezing point of water in degrees Celsius?", "0"),
    ("What is the boiling point of water in degrees Celsius?", "100"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the longest river in Africa?", "Nile"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("How many legs does a spider have?", "eight"),
    ("What is the hardest natural substance?", "diamond"),
    ("What is H2O commonly called?", "water"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is the closest star to Earth?", "Sun"),
    ("How many hours are in a day?", "24"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("What is the smallest prime number?", "2"),
    ("Which organ pumps blood through the human body?", "heart"),
    ("What is the currency of Japan?", "yen"),
    ("In which continent is Kenya?", "Africa"),
]
NUMBER_WORDS = {"seven": "7", "eight": "8", "0": "zero", "2": "two", "24": "twenty-four", "100": "hundred"}


@dataclass
class ProbeResult:
    """One capability probe, before and after."""

    name: str
    metric: str  # "accuracy" or "perplexity"
    before: float
    after: float
    n: int
    higher_is_better: bool

    @property
    def delta(self) -> float:
        """After minus before."""
        return self.after - self.before

    def regressed(self, tolerance: float, ppl_tolerance: float) -> bool:
        """Whether the probe got worse by more than its tolerance (accuracy: absolute; perplexity: relative)."""
        if self.higher_is_better:
            return self.delta < -tolerance
        return self.after > self.before * (1 + ppl_tolerance)

    def as_dict(self, tolerance: float = 0.02, ppl_tolerance: float = 0.05) -> dict:
        """The result as a JSON-ready dict, with whether it regressed under these tolerances."""
        return {
            "probe": self.name,
            "metric": self.metric,
            "before": self.before,
            "after": self.after,
            "delta": self.delta,
            "n": self.n,
            "regressed": self.regressed(tolerance, ppl_tolerance),
        }


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], max_length: int = 512) -> float:
    """exp(mean token NLL) over ``texts``, each scored on its own (BOS added as the tokenizer does)."""
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
        if ids.shape[1] < 2:
            continue
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
        total_nll += nll.item()
        total_tokens += ids.shape[1] - 1
    return math.exp(total_nll / max(total_tokens, 1))


def general_texts(path: str | None = None) -> list[str]:
    """Paragraphs (blank-line separated) of ``path`` or of the shipped general text."""
    text = Path(path or GENERAL_TEXT).read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def arithmetic_probe(n: int, seed: int = 1234) -> list[dict]:
    """``n`` arithmetic questions (+, -, *) with their answers, the same for every seed."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        op = rng.choice("+-*")
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"prompt": f"What is {a} {'×' if op == '*' else op} {b}?", "answer": answer})
    return rows


def facts_probe(n: int) -> list[dict]:
    """The first ``n`` general-knowledge questions with their answers."""
    return [{"prompt": q, "answer": a} for q, a in FACTS[:n]]


def fact_correct(reply: str, answer: str) -> bool:
    """Whether ``reply`` contains ``answer`` (or, for a number, its word)."""
    alternatives = [answer] + ([NUMBER_WORDS[answer.lower()]] if answer.lower() in NUMBER_WORDS else [])
    return any(answer_matches(reply, alt, "contains") for alt in alternatives)


def answer_accuracy(
    model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int, kind: str
) -> tuple[float, list[str]]:
    """The fraction of ``rows`` whose greedy reply ``correct`` accepts."""
    replies = generate_responses(
        model,
        tokenizer,
        [r["prompt"] for r in rows],
        max_new_tokens,
        batch_size,
        desc=f"probe: {kind}",
        show_progress=False,
    )
    check = (
        (lambda reply, row: answer_matches(reply, row["answer"], "final_number"))
        if kind == "arithmetic"
        else (lambda reply, row: fact_correct(reply, row["answer"]))
    )
    correct = [check(reply, row) for reply, row in zip(replies, rows)]
    return sum(correct) / len(rows), replies


PROBE_NEW_TOKENS = 48  # answer length of the arithmetic and facts probes


def probe_score(
    model, tokenizer, name: str, size: int, batch_size: int, perplexity_text: str | None = None
) -> tuple[float, int]:
    """One model's score on one probe and the number of items: perplexity on general text, or the
    accuracy of greedy answers to the first ``size`` arithmetic or facts questions."""
    if name == "perplexity":
        texts = general_texts(perplexity_text)
        return perplexity(model, tokenizer, texts), len(texts)
    rows = arithmetic_probe(size) if name == "arithmetic" else facts_probe(size)
    return answer_accuracy(model, tokenizer, rows, PROBE_NEW_TOKENS, batch_size, name)[0], len(rows)


def probe_result(name: str, before: float, after: float, n: int) -> ProbeResult:
    """A :class:`ProbeResult` (accuracy, except the perplexity probe)."""
    return ProbeResult(
        name, "perplexity" if name == "perplexity" else "accuracy", before, after, n, name != "perplexity"
    )


def run_lm_eval(model_path: str, tasks: list[str], limit: int | None) -> dict[str, float]:
    """lm-evaluation-harness scores (the first accuracy-like metric of each task)."""
    lm_eval = require("lm_eval", "eval", "lm_eval_tasks")
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_path}", tasks=tasks, limit=limit)[
        "results"
    ]
    scores = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and key.split(",")[0] in ("acc", "acc_norm", "exact_match", "pass@1"):
                scores[task] = float(value)
                break
    return scores
