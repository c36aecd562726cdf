"""Pre-flight checks of the RL commands (ppo, grpo, rloo): prompts, rewards, generation settings.

RL data are prompts, not pairs, so the pair checks do not apply; what goes wrong first in RL is a prompt
cut by ``max_prompt_length``, a reward that cannot tell answers apart (no signal at all), and generation
settings that leave the method nothing to compare.
"""

from __future__ import annotations

import math
import statistics

from alignkit.data.tokenize import prompt_token_ids
from alignkit.diagnose.context import Check

MAX_CUT = 0.05  # a warning when more prompts than this lose tokens to max_prompt_length
PROBES = ("I'm not sure.", "The answer is 42.", "Let me think about this step by step, at some length, first.")


def prompt_lengths(config, rows: list[dict], tokenizer) -> list[int]:
    """Each prompt's tokens as the RL commands format it (chat template included)."""
    return [len(prompt_token_ids(tokenizer, r["prompt"], config.apply_chat_template)) for r in rows]


def check_prompt_lengths(config, lengths: list[int]) -> Check:
    """How many prompts ``max_prompt_length`` cuts (from the left: their start is lost)."""
    cut = sum(n > config.max_prompt_length for n in lengths)
    p95 = sorted(lengths)[int(0.95 * (len(lengths) - 1))]
    detail = (
        f"{cut} of {len(lengths)} prompts are longer than max_prompt_length {config.max_prompt_length} (p95 {p95})."
    )
    if cut > MAX_CUT * len(lengths):
        return Check("prompt length", "warn", detail, f"Raise max_prompt_length to about {p95}, or shorten them.")
    return Check("prompt length", "pass", detail)


def check_rewards(config, reward_fn, rows: list[dict]) -> Check:
    """The reward terms score a few very different answers to real prompts with finite numbers that differ
    (not probed with a judge term: that would call its endpoint before the run starts)."""
    if any(spec.kind == "judge" for spec in config.rewards):
        return Check("rewards", "pass", "a judge term: not probed before training (no endpoint calls).")
    sample = rows[: min(4, len(rows))]
    answers = [str(r.get("answer", PROBES[0])) for r in sample]
    probe_rows = [r for r in sample for _ in range(len(PROBES) + 1)]
    probe_texts = [text for r, a in zip(sample, answers) for text in (a, *PROBES)]
    try:
        scores, _ = reward_fn(probe_rows, probe_texts)
    except Exception as exc:  # noqa: BLE001 -- a user's reward function fails in its own way
        return Check("rewards", "fail", f"scoring sample answers raised {type(exc).__name__}: {exc}", "Fix the reward.")
    if not all(math.isfinite(s) for s in scores):
        return Check("rewards", "fail", "a reward term returned NaN or inf on sample answers.", "Fix the reward term.")
    if statistics.pstdev(scores) == 0:
        return Check(
            "rewards",
            "warn",
            f"every sample answer (the row's answer and {len(PROBES)} unlike ones) scores {scores[0]:g}: no signal.",
            "Check the reward terms (a verifier needs an `answer` per row; a pattern should match good answers).",
        )
    return Check("rewards", "pass", f"sample answers score from {min(scores):g} to {max(scores):g}.")


def check_generation(config, method: str, model, longest_prompt: int) -> list[Check]:
    """Sampling settings the method can learn from, and room in the model for the longest prompt (as cut to
    ``max_prompt_length``) plus ``max_new_tokens``."""
    checks = []
    if method in ("grpo", "rloo") and config.num_generations < 2:
        checks.append(
            Check("generation", "fail", f"{method} compares completions of a prompt: num_generations is 1.", "Use 4-8.")
        )
    if config.temperature <= 0 or config.top_p <= 0:
        checks.append(
            Check("generation", "fail", "temperature and top_p must be above 0 to sample.", "Use temperature ~0.7-1.")
        )
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    total = min(config.max_prompt_length, longest_prompt) + config.max_new_tokens
    if positions and total > positions:
        checks.append(
            Check(
                "generation",
                "fail",
                f"the longest prompt ({min(config.max_prompt_length, longest_prompt)} tokens) + max_new_tokens "
                f"= {total} exceeds the model's {positions} positions.",
                "Lower max_new_tokens or max_prompt_length.",
            )
        )
    return checks or [
        Check(
            "generation",
            "pass",
            f"{config.num_generations} sample(s) per prompt at temperature {config.temperature}, top_p {config.top_p}, "
            f"up to {config.max_new_tokens} new tokens.",
        )
    ]


def rl_checks(config, method: str, train_rows: list[dict], eval_rows: list[dict], tokenizer, model, reward_fn):
    """Every RL check, in order."""
    checks = [Check("data", "pass", f"{len(train_rows)} training and {len(eval_rows)} eval prompts validated.")]
    if not eval_rows:
        checks.append(
            Check("eval split", "warn", "no held-out prompts: no eval reward.", "Set eval_data, or eval_split 0.1.")
        )
    lengths = prompt_lengths(config, train_rows + eval_rows, tokenizer)
    checks.append(check_prompt_lengths(config, lengths))
    checks.append(check_rewards(config, reward_fn, train_rows))
    checks += check_generation(config, method, model, max(lengths))
    return checks
