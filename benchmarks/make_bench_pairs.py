"""Write the shipped benchmark pair sets (deterministic). Run: python benchmarks/make_bench_pairs.py

- ``bench_pairs.jsonl``: a wide, log-uniform spread of prompt and response lengths (many short, some
  long, like real chat data), so padding waste is a large part of what a padded trainer computes;
- ``similar_pairs.jsonl``: lengths drawn uniformly from narrow ranges (prompts 30-90 words, responses
  30-200), about 27% padding in TRL's batches of 4 pairs: the regime where padding-free packing
  gains least;
- ``parity_pairs.jsonl`` (first-step numerics) and ``sweep_pairs.jsonl`` (long pairs for the
  max_length sweep)."""

import json
import random
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


def write(name: str, rows: list[dict]) -> None:
    (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    write("bench_pairs.jsonl", pairs(0, 256, (8, 160), (4, 260)))
    write("similar_pairs.jsonl", similar_pairs(3, 64, (30, 90), (30, 200)))
    write("parity_pairs.jsonl", pairs(1, 8, (5, 30), (3, 40)))
    # long pairs for the max_length sweep: up to ~2.5k tokens, so every max_length up to 2048 truncates some
    write("sweep_pairs.jsonl", pairs(2, 64, (16, 1000), (8, 1500)))
