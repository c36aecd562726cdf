"""`alignkit score`: a reward model's scores for pairs, and its pairwise accuracy on them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignkit.atomic import atomic_path
from alignkit.configs import ScoreConfig
from alignkit.data.collate import PreferenceCollator, collate_to
from alignkit.data.preference import load_preference_data
from alignkit.data.tokenize import tokenize_reward_pairs
from alignkit.engine.scores import sequence_scores
from alignkit.errors import RunDirError
from alignkit.models.loading import load_model_and_tokenizer


@torch.no_grad()
def score_pairs(config: ScoreConfig) -> dict:
    """Scores every pair; returns ``{"accuracy", "margin", "pairs", "scores": [(chosen, rejected), ...]}``."""
    if config.output and Path(config.output).exists() and not config.overwrite:
        raise RunDirError(f"{config.output} exists; pass --overwrite to replace it")
    examples = load_preference_data(config.data)
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype, reward_head=True)
    model.eval()
    pairs = tokenize_reward_pairs(
        examples, tokenizer, config.max_length, config.max_prompt_length, config.apply_chat_template
    )
    collate = PreferenceCollator(tokenizer.pad_token_id)
    scores: list[tuple[float, float]] = []
    for start in range(0, len(pairs), config.batch_size):
        chunk = pairs[start : start + config.batch_size]
        values = sequence_scores(model, collate_to(collate, [{"pair": p} for p in chunk], model.device)).cpu()
        scores.extend(zip(values[: len(chunk)].tolist(), values[len(chunk) :].tolist()))
    accuracy = sum(c > r for c, r in scores) / len(scores)
    margin = sum(c - r for c, r in scores) / len(scores)
    print(
        f"alignkit score: {len(scores)} pairs from {config.data}: pairwise "
        f"accuracy {accuracy:.3f}, mean margin {margin:+.3f}"
    )
    if config.output:
        with atomic_path(Path(config.output)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for example, (c, r) in zip(examples, scores):
                    f.write(
                        json.dumps({"where": example.where, "chosen_score": c, "rejected_score": r, "correct": c > r})
                        + "\n"
                    )
        print(f"alignkit score: wrote {config.output}")
    return {"accuracy": accuracy, "margin": margin, "pairs": len(scores), "scores": scores}
