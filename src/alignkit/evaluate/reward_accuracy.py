"""Held-out reward accuracy: does the trained model prefer chosen over rejected on pairs it never saw?

The implicit DPO reward of a response is ``beta * (log pi(y|x) - log pi_ref(y|x))``; a pair is
ranked correctly when the chosen reward is higher. 0.70-0.90 is the healthy band: below it the
preference was not learned; above it the eval pairs are too easy or leaked from training.
"""

from __future__ import annotations

import torch

from alignkit.data.collate import PreferenceCollator, collate_to
from alignkit.data.tokenize import tokenize_pairs
from alignkit.engine.logprobs import sequence_logps

HEALTHY_BAND = (0.70, 0.90)


@torch.no_grad()
def pair_logps(
    model,
    tokenizer,
    examples: list,
    max_length: int,
    max_prompt_length: int,
    batch_size: int = 8,
    apply_chat_template: bool = True,
) -> torch.Tensor:
    """``[n, 2]``: summed response log-probs of (chosen, rejected) for every pair."""
    pairs = tokenize_pairs(examples, tokenizer, max_length, max_prompt_length, apply_chat_template)
    collate = PreferenceCollator(tokenizer.pad_token_id, padding_free=False)
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = collate_to(collate, [{"pair": p} for p in chunk], device)
        logps = sequence_logps(model, batch).logps.float().cpu()
        rows.append(torch.stack([logps[: len(chunk)], logps[len(chunk) :]], dim=1))
    return torch.cat(rows)


def band_flag(accuracy: float, band: tuple[float, float] = HEALTHY_BAND) -> str:
    """Where a held-out reward accuracy sits against the healthy band, in words."""
    low, high = band
    if accuracy < low:
        return f"below the healthy {low:.2f}-{high:.2f} band: the preference was not learned well"
    if accuracy > high:
        return f"above the healthy {low:.2f}-{high:.2f} band: eval pairs may be too easy or leaked from training"
    return f"within the healthy {low:.2f}-{high:.2f} band"


def implicit_reward_accuracy(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> dict:
    """``policy``/``reference``: ``[n, 2]`` (chosen, rejected) log-probs. Ties count as wrong."""
    rewards = beta * (policy - reference)
    chosen, rejected = rewards[:, 0], rewards[:, 1]
    accuracy = (chosen > rejected).float().mean().item()
    return {
        "accuracy": accuracy,
        "margin": (chosen - rejected).mean().item(),
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "pairs": int(policy.shape[0]),
        "flag": band_flag(accuracy),
    }
