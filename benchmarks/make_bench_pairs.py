"""Write the shipped benchmark pair sets (deterministic). Run: python benchmarks/make_bench_pairs.py

- ``bench_pairs.jsonl``: a wide, log-uniform spread of prompt and response lengths (many short, some
  long, like real chat data), so padding waste is a large part of what a padded trainer computes;
- ``similar_pairs.jsonl``: lengths drawn uniformly from narrow ranges (prompts 30-90 words, responses
  30-200), about 27% padding in TRL's batches of 4 pairs: the regime where padding-free packing
  gains least;
- ``parity_pairs.jsonl`` (first-step numerics) and ``sweep_pairs.jsonl`` (long pairs for the
  max_length sweep).

Held-out sets (``--prose``), made after the engine was tuned and never used to tune it: spans of real
prose (this repository's ``docs/*.md`` as of 2026-11-28, markdown and code included, so words split
into several tokens), in three length shapes:

- ``prose_pairs.jsonl``: prompts 10-40 words, responses 70-150 words;
- ``short_pairs.jsonl``: prompts 8-25 words, responses 20-60 words;
- ``equal_pairs.jsonl``: prompts 40-42 words, responses 110-114 words: nearly equal lengths, so a padded
  trainer wastes little (18% padding in TRL's batches) and prompts are a small share of each sequence,
  the regime where padding-free batches and prefix sharing save least.

The docs change, so ``--prose`` rewrites these files differently later: they are shipped as made.

``--long`` (made 2026-11-29, after the engine was tuned; never used to tune it) writes ``long_pairs.jsonl``:
prose spans cut by token count with the embedded model's tokenizer, prompts of 6-15 tokens and both
responses of 236-244 tokens. A padded trainer wastes almost nothing there (2% padding in TRL's batches)
and a prompt is 4% of a sequence: nothing for padding-free batches or prefix sharing to save, so what is
left is the engine itself. It is the weakest regime measured."""

import json
import random
import re
import sys
from pathlib import Path

WORDS = (
    "the model answer question data result value method system number report table figure time "
    "train test score reason step because which where other first second small large simple clear "
    "should could would might every some many few often never always about after before between"
).split()
OUT = Path(__file__).parent / "data"


def text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    sentences, i = [], 0
    while i < len(words):
        k = rng.randint(6, 16)
        sentences.append(" ".join(words[i : i + k]).capitalize() + ".")
        i += k
    return " ".join(sentences)


def pairs(seed: int, n: int, prompt_words: tuple[int, int], response_words: tuple[int, int]) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        # log-uniform-ish lengths: many short, some long, like real chat data
        p = int(prompt_words[0] * (prompt_words[1] / prompt_words[0]) ** rng.random())
        c = int(response_words[0] * (response_words[1] / response_words[0]) ** rng.random())
        r = int(response_words[0] * (response_words[1] / response_words[0]) ** rng.random())
        rows.append({"prompt": f"Question {i}: {text(rng, p)}\n", "chosen": text(rng, c), "rejected": text(rng, r)})
    return rows


def similar_pairs(seed: int, n: int, prompt_words: tuple[int, int], response_words: tuple[int, int]) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p, c, r = rng.randint(*prompt_words), rng.randint(*response_words), rng.randint(*response_words)
        rows.append({"prompt": f"Question {i}: {text(rng, p)}\n", "chosen": text(rng, c), "rejected": text(rng, r)})
    return rows


def docs_words() -> list[str]:
    """The words of the docs' prose, in order (tables, fences and headings left out)."""
    docs = sorted((Path(__file__).parent.parent / "docs").glob("*.md"))
    text = " ".join(p.read_text() for p in docs)
    return [w for w in re.findall(r"\S+", text) if not w.startswith(("|", "```", "#"))]


def prose_pairs(
    words: list[str], seed: int, n: int, prompt_words: tuple[int, int], response_words: tuple[int, int]
) -> list[dict]:
    """Pairs of random spans of ``words`` (see :func:`docs_words`)."""
    rng = random.Random(seed)

    def span(bounds: tuple[int, int]) -> str:
        k = rng.randint(*bounds)
        start = rng.randrange(len(words) - k)
        return " ".join(words[start : start + k])

    return [
        {"prompt": span(prompt_words) + "?", "chosen": span(response_words), "rejected": span(response_words)}
        for _ in range(n)
    ]


def token_span_pairs(words: list[str], seed: int, n: int, prompt_tokens, response_tokens) -> list[dict]:
    """Pairs of random spans of ``words`` whose token counts (the embedded model's tokenizer, no special
    tokens) fall in the given bounds: lengths equal in tokens, not in words."""
    from transformers import AutoTokenizer

    from alignkit.models.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    rng = random.Random(seed)

    def span(bounds: tuple[int, int]) -> str:
        while True:
            k = rng.randint(bounds[0] // 2, bounds[1])  # docs prose runs 1-2 tokens a word
            start = rng.randrange(len(words) - k)
            text = " ".join(words[start : start + k])
            if bounds[0] <= len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= bounds[1]:
                return text

    return [
        {"prompt": span(prompt_tokens) + "?", "chosen": span(response_tokens), "rejected": span(response_tokens)}
        for _ in range(n)
    ]


def write(name: str, rows: list[dict]) -> None:
    (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    write("bench_pairs.jsonl", pairs(0, 256, (8, 160), (4, 260)))
    write("similar_pairs.jsonl", similar_pairs(3, 64, (30, 90), (30, 200)))
    write("parity_pairs.jsonl", pairs(1, 8, (5, 30), (3, 40)))
    # long pairs for the max_length sweep: up to ~2.5k tokens, so every max_length up to 2048 truncates some
    write("sweep_pairs.jsonl", pairs(2, 64, (16, 1000), (8, 1500)))
    if "--prose" in sys.argv:
        words = docs_words()
        write("prose_pairs.jsonl", prose_pairs(words, 7, 64, (10, 40), (70, 150)))
        write("short_pairs.jsonl", prose_pairs(words, 13, 64, (8, 25), (20, 60)))
        write("equal_pairs.jsonl", prose_pairs(words, 21, 64, (40, 42), (110, 114)))
    if "--long" in sys.argv:
        # prompts of 6-14 tokens, 6-15 with the "?" appended
        write("long_pairs.jsonl", token_span_pairs(docs_words(), 47, 64, (6, 14), (236, 244)))
