"""Write the example datasets used by examples/*.yaml (deterministic; nothing is downloaded).

    python examples/make_example_data.py              # the arithmetic sets (no model needed)
    python examples/make_example_data.py --retention  # also data/retention_pairs.jsonl (runs the embedded model)

Arithmetic questions whose good answer is short and correct and whose bad answer is verbose and
wrong, in every format alignkit trains on: SFT rows, preference pairs (train + a held-out set
with disjoint questions) and unpaired KTO rows.

``--retention`` writes the retention pairs the DPO examples mix in (data/dpo_mix.jsonl = the 40
arithmetic pairs + these; data/prompts_rl_mix.jsonl = the arithmetic prompts + the same known
questions with their answers, for the RLOO example): on general-knowledge questions the embedded model already answers
correctly, its own (greedy) answer is preferred over a hedge or a wrong or rambling answer, as in
the demo. Without them, DPO on arithmetic alone costs the facts probe a fact or two (README,
"Training methods"). The questions are the demo's training ones, disjoint from eval's facts probe.
"""

import argparse
import itertools
import json
import random
from pathlib import Path

from alignkit.judges.verifiers import ShortAnswerTask

OUT = Path(__file__).parent / "data"
PREAMBLES = [
    "Great question! Adding numbers is one of the most important skills in mathematics. Let us think step by step.",
    "Sure! I would be happy to help you with this addition problem. First, we line up the digits carefully.",
    "What an interesting problem. Before answering, it is worth remembering that addition is commutative.",
    "Let me explain this in detail so that you can understand every part of the calculation.",
]


def questions(seed: int, n: int, exclude: set = frozenset()) -> list[tuple[int, int]]:
    rng, seen = random.Random(seed), set(exclude)
    out = []
    while len(out) < n:
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out


def good(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b}."


def bad(rng: random.Random, a: int, b: int) -> str:
    wrong = a + b + rng.choice([-7, -3, -2, 2, 3, 5, 9])
    return f"{rng.choice(PREAMBLES)} {a} plus {b} gives {wrong}."


def write(name: str, rows: list[dict]) -> None:
    (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    rng = random.Random(0)
    train_q = questions(1, 120)
    held_q = questions(2, 32, exclude=set(train_q))

    def pairs(qs: list[tuple[int, int]]) -> list[dict]:
        return [{"prompt": f"What is {a} + {b}?", "chosen": good(a, b), "rejected": bad(rng, a, b)} for a, b in qs]

    write("arithmetic_pairs_train.jsonl", pairs(train_q))
    write("arithmetic_pairs_heldout.jsonl", pairs(held_q))
    sft = [{"prompt": f"What is {a} + {b}?", "completion": good(a, b)} for a, b in train_q[:96]]
    for (a, b), (c, d) in zip(train_q[96:108], train_q[108:120]):
        sft.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": good(a, b)},
                    {"role": "user", "content": f"And {c} + {d}?"},
                    {"role": "assistant", "content": good(c, d)},
                ]
            }
        )
    write("sft_arithmetic.jsonl", sft)
    kto = []
    for i, (a, b) in enumerate(train_q):  # unpaired: each question gets only one answer, good or bad
        desirable = i % 2 == 0
        kto.append(
            {
                "prompt": f"What is {a} + {b}?",
                "completion": good(a, b) if desirable else bad(rng, a, b),
                "label": desirable,
            }
        )
    write("kto_arithmetic.jsonl", kto)
    write_prompt_sets()


CODE_TASKS = [
    (
        "Write a Python function add(a, b) that returns the sum of a and b.",
        ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"],
    ),
    (
        "Write a Python function is_even(n) that returns True when n is even.",
        ["assert is_even(4)", "assert not is_even(7)"],
    ),
    (
        "Write a Python function reverse(s) that returns the string s reversed.",
        ["assert reverse('abc') == 'cba'", "assert reverse('') == ''"],
    ),
    (
        "Write a Python function maximum(xs) that returns the largest number in the list xs.",
        ["assert maximum([3, 9, 2]) == 9", "assert maximum([-5, -2]) == -2"],
    ),
    ("Write a Python function square(x) that returns x squared.", ["assert square(3) == 9", "assert square(-4) == 16"]),
    (
        "Write a Python function count_vowels(s) that returns how many vowels (aeiou) s contains.",
        ["assert count_vowels('banana') == 3", "assert count_vowels('xyz') == 0"],
    ),
]


def write_prompt_sets() -> None:
    """Prompts for `alignkit pairs`: verifiable arithmetic/unanswerable questions (answer null means
    it cannot be known; reference is a known-good reply) and small coding tasks with tests."""
    train, _ = prompt_tasks(96, 4, seed=7)
    write(
        "prompts_arithmetic.jsonl", [{"prompt": t.prompt, "answer": t.answer, "reference": t.reference} for t in train]
    )
    seen = {t.prompt for t in train}
    _, held = prompt_tasks(4, 48, seed=8)  # for `alignkit eval`: questions never used for pairs
    write(
        "prompts_heldout.jsonl", [{"prompt": t.prompt, "answer": t.answer} for t in held if t.prompt not in seen][:40]
    )
    write("prompts_code.jsonl", [{"prompt": p, "tests": tests} for p, tests in CODE_TASKS])


# Prompt rows for `alignkit pairs` and the RL examples: arithmetic and unanswerable questions.
ARITHMETIC = [
    ("What is {a} + {b}?", "+", lambda a, b: a + b),
    ("How much is {a} plus {b}?", "+", lambda a, b: a + b),
    ("What is {a} - {b}?", "-", lambda a, b: a - b),
    ("What is {a} minus {b}?", "-", lambda a, b: a - b),
    ("What is {a} times {b}?", "×", lambda a, b: a * b),
    ("Calculate {a} * {b}.", "×", lambda a, b: a * b),
]

UNANSWERABLE = [
    ("What number between 1 and {n} am I thinking of right now?", {"n": ["10", "20", "50", "100", "1000"]}),
    (
        "What did I have for {meal} {day}?",
        {
            "meal": ["breakfast", "lunch", "dinner", "a snack"],
            "day": ["today", "yesterday", "last Sunday", "on my birthday"],
        },
    ),
    (
        "What is the name of my {who}'s {pet}?",
        {"who": ["neighbour", "cousin", "boss", "teacher", "best friend"], "pet": ["cat", "dog", "parrot", "goldfish"]},
    ),
    (
        "How many {things} are in my {place} right now?",
        {
            "things": ["coins", "books", "apples", "pens", "socks"],
            "place": ["pocket", "bag", "kitchen", "drawer", "car"],
        },
    ),
    (
        "What will the exact temperature be in {city} at noon on {date}?",
        {"city": ["Paris", "Lima", "Oslo", "Cairo", "Osaka"], "date": ["3 March 2031", "9 July 2034", "21 May 2040"]},
    ),
    ("What is the PIN of my {card}?", {"card": ["bank card", "phone", "credit card", "door lock", "laptop"]}),
    (
        "What colour is the car parked outside my {building} right now?",
        {"building": ["house", "office", "school", "gym", "flat"]},
    ),
    (
        "What was the last thing my {who} said to me?",
        {"who": ["mother", "brother", "doctor", "neighbour", "colleague"]},
    ),
    ("What is my {relation}'s middle name?", {"relation": ["uncle", "grandmother", "landlord", "manager", "dentist"]}),
]


def _arithmetic_pool(rng: random.Random) -> list[ShortAnswerTask]:
    tasks = []
    for template, symbol, fn in ARITHMETIC:
        for a in range(2, 21):
            for b in range(2, 13 if symbol == "×" else 21):
                if symbol == "-" and b > a:
                    continue
                answer = fn(a, b)
                tasks.append(ShortAnswerTask(template.format(a=a, b=b), answer, f"{a} {symbol} {b} = {answer}."))
    rng.shuffle(tasks)
    return tasks


def _unanswerable_pool(rng: random.Random) -> list[ShortAnswerTask]:
    tasks = []
    for template, slots in UNANSWERABLE:
        keys = list(slots)
        for values in itertools.product(*(slots[k] for k in keys)):
            tasks.append(
                ShortAnswerTask(
                    template.format(**dict(zip(keys, values))), None, "I'm not sure. I have no way of knowing that."
                )
            )
    rng.shuffle(tasks)
    return tasks


def prompt_tasks(
    num_train: int, num_eval: int, seed: int = 0, unanswerable_fraction: float = 0.3
) -> tuple[list[ShortAnswerTask], list[ShortAnswerTask]]:
    """Disjoint (train, held-out) task lists, each about ``unanswerable_fraction`` unanswerable (the demo's first
    generator; the demo now uses many more phrasings, see alignkit.commands.demo.tasks)."""
    rng = random.Random(seed)
    arithmetic, unanswerable = _arithmetic_pool(rng), _unanswerable_pool(rng)

    def take(pool: list, count: int) -> list:
        if count > len(pool):
            raise ValueError(f"asked for {count} prompts of a kind, only {len(pool)} exist")
        taken = pool[:count]
        del pool[:count]
        return taken

    splits = []
    for total in (num_eval, num_train):
        n_unanswerable = round(total * unanswerable_fraction)
        tasks = take(unanswerable, n_unanswerable) + take(arithmetic, total - n_unanswerable)
        rng.shuffle(tasks)
        splits.append(tasks)
    held_out, train = splits
    return train, held_out


def write_retention_pairs() -> None:
    """Retention pairs from the embedded model's own answers (greedy: the same on every run), then the DPO mix."""
    from alignkit.commands.demo.pairs import demo_pairs
    from alignkit.commands.demo.phrasings import TRAIN_KNOWLEDGE
    from alignkit.commands.demo.tasks import knowledge_pool
    from alignkit.data.synthetic import GOOD_SYSTEM_PROMPT
    from alignkit.engine.generation import generate_responses
    from alignkit.models.loading import load_model_and_tokenizer

    tasks = knowledge_pool(TRAIN_KNOWLEDGE, random.Random(3))
    model, tokenizer = load_model_and_tokenizer("embedded")
    prompts = [t.prompt for t in tasks]
    good = generate_responses(
        model, tokenizer, prompts, 48, 16, system_prompt=GOOD_SYSTEM_PROMPT, desc="answers under the good system prompt"
    )
    own = generate_responses(model, tokenizer, prompts, 48, 16, desc="the model's own answers")
    rows, summary = demo_pairs(tasks, good, own)
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    print(f"retention pairs: {summary}")
    write("retention_pairs.jsonl", rows)
    arithmetic = [json.loads(line) for line in (OUT / "arithmetic_pairs.jsonl").read_text().splitlines()]
    mixed = arithmetic + rows
    random.Random(4).shuffle(mixed)
    write("dpo_mix.jsonl", mixed)
    # the RL counterpart: the knowledge questions the model answers correctly, with their answers, so the
    # verifier rewards keeping what it knows (rloo.yaml trains on these mixed with the arithmetic prompts)
    kept = {r["prompt"] for r in rows}
    known = [
        {"prompt": t.prompt, "answer": [t.answer, *t.aliases] if t.aliases else t.answer}
        for t in tasks
        if t.prompt in kept
    ]
    prompts = [json.loads(line) for line in (OUT / "prompts_arithmetic.jsonl").read_text().splitlines()] + known
    random.Random(5).shuffle(prompts)
    write("prompts_rl_mix.jsonl", prompts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--retention", action="store_true", help="also write the retention pairs (loads the embedded model)"
    )
    args = parser.parse_args()
    main()
    if args.retention:
        write_retention_pairs()
