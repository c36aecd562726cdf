"""The demo's lesson: answer what can be answered, directly and correctly; say "not sure" only when
nobody could know. Three kinds of question, generated deterministically:

- ``arithmetic``: verifiable sums, differences and products, in many phrasings (questions, imperatives,
  short word problems, numbers in words);
- ``unanswerable``: private facts, questions about the user, the future, the unknowable;
- ``knowledge``: general questions the model may already answer (retention: keep answering them).

Training and held-out tasks come from disjoint phrasings (see ``phrasings``), so the held-out
set measures the preference, not the templates.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from alignkit.commands.demo.phrasings import (
    HELDOUT_ARITHMETIC,
    HELDOUT_KNOWLEDGE,
    HELDOUT_UNANSWERABLE,
    TRAIN_ARITHMETIC,
    TRAIN_KNOWLEDGE,
    TRAIN_UNANSWERABLE,
    number_words,
)
from alignkit.judges.verifiers import ShortAnswerTask

NOT_SURE_REPLY = "I'm not sure. I have no way of knowing that."
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b}
KINDS = ("arithmetic", "unanswerable", "knowledge")


@dataclass(frozen=True)
class TaskMix:
    """Fractions of each kind of question in a split (they need not sum to exactly 1; the last kind takes the rest)."""

    arithmetic: float = 0.40
    unanswerable: float = 0.30
    knowledge: float = 0.30

    def counts(self, total: int) -> dict[str, int]:
        """How many prompts of each kind make up ``total`` (general knowledge takes the rounding remainder)."""
        arithmetic = round(total * self.arithmetic)
        unanswerable = round(total * self.unanswerable)
        return {
            "arithmetic": arithmetic,
            "unanswerable": unanswerable,
            "knowledge": max(total - arithmetic - unanswerable, 0),
        }


def _interleave(groups: list[list], rng: random.Random) -> list:
    """Shuffle each group, then take one from each in turn, so every template is used about equally."""
    for group in groups:
        rng.shuffle(group)
    return [item for round_ in itertools.zip_longest(*groups) for item in round_ if item is not None]


def arithmetic_pool(templates: list[tuple[str, str]], rng: random.Random) -> list[ShortAnswerTask]:
    """Every template filled with small numbers (a, b in 2-20; products up to 20 × 12; no negative
    differences), interleaved across templates."""
    groups = []
    for template, symbol in templates:
        group = []
        for a in range(2, 21):
            for b in range(2, 13 if symbol == "×" else 21):
                if symbol == "-" and b >= a:
                    continue
                answer = OPERATIONS[symbol](a, b)
                prompt = template.format(a=a, b=b, aw=number_words(a), bw=number_words(b))
                group.append(ShortAnswerTask(prompt, answer, f"{a} {symbol} {b} = {answer}."))
        groups.append(group)
    return _interleave(groups, rng)


def unanswerable_pool(shapes: list[tuple[str, dict]], rng: random.Random) -> list[ShortAnswerTask]:
    """Every unanswerable question the shapes' slot values make, the shapes interleaved in a seeded order."""
    groups = []
    for shape, slots in shapes:
        keys = list(slots)
        groups.append(
            [
                ShortAnswerTask(shape.format(**dict(zip(keys, values))), None, NOT_SURE_REPLY)
                for values in itertools.product(*(slots[k] for k in keys))
            ]
        )
    return _interleave(groups, rng)


def knowledge_pool(questions: list[tuple[str, str, tuple]], rng: random.Random) -> list[ShortAnswerTask]:
    """General-knowledge tasks (question, answer, accepted aliases) in a seeded order."""
    tasks = [
        ShortAnswerTask(q, answer, f"{answer[0].upper()}{answer[1:]}.", aliases=tuple(aliases))
        for q, answer, aliases in questions
    ]
    rng.shuffle(tasks)
    return tasks


def _take(pool: list, count: int, kind: str, split: str) -> list:
    if count > len(pool):
        raise ValueError(f"asked for {count} {split} {kind} prompts, only {len(pool)} exist")
    return pool[:count]


def demo_tasks(
    num_train: int, num_eval: int, seed: int = 0, mix: TaskMix = TaskMix()
) -> tuple[list[ShortAnswerTask], list[ShortAnswerTask]]:
    """(train, held-out) task lists in the proportions of ``mix``. Held-out tasks use only held-out
    phrasings, shapes and questions, so no held-out prompt shares a template with a training one."""
    rng = random.Random(seed)
    pools = {
        "train": {
            "arithmetic": arithmetic_pool(TRAIN_ARITHMETIC, rng),
            "unanswerable": unanswerable_pool(TRAIN_UNANSWERABLE, rng),
            "knowledge": knowledge_pool(TRAIN_KNOWLEDGE, rng),
        },
        "held-out": {
            "arithmetic": arithmetic_pool(HELDOUT_ARITHMETIC, rng),
            "unanswerable": unanswerable_pool(HELDOUT_UNANSWERABLE, rng),
            "knowledge": knowledge_pool(HELDOUT_KNOWLEDGE, rng),
        },
    }
    splits = {}
    for split, total in (("train", num_train), ("held-out", num_eval)):
        tasks = [t for kind, n in mix.counts(total).items() for t in _take(pools[split][kind], n, kind, split)]
        rng.shuffle(tasks)
        splits[split] = tasks
    return splits["train"], splits["held-out"]
