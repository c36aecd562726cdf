"""Batched generation from chat prompts (left-padded, length-sorted to waste little on padding)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from alignkit.data.tokenize import prompt_token_ids
from alignkit.engine.logprobs import in_eval_mode


@torch.no_grad()
def generate_replies(
    model,
    tokenizer,
    prompts: list,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    system_prompt: str | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    desc: str = "generating",
    show_progress: bool = True,
    synced: bool = False,
) -> tuple[list[str], list[bool]]:
    """One response per prompt (greedy when ``temperature`` is 0), special tokens stripped, and
    whether each one ended (EOS) within ``max_new_tokens`` rather than running into the limit."""
    encoded = [prompt_token_ids(tokenizer, p, True, system_prompt) for p in prompts]
    ids = sample_token_ids(
        model,
        tokenizer,
        encoded,
        max_new_tokens,
        temperature,
        top_p,
        batch_size,
        desc=desc,
        show_progress=show_progress,
        synced=synced,
    )
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in ids], [
        tokenizer.eos_token_id in r for r in ids
    ]


def generate_responses(model, tokenizer, prompts: list, *args, **kwargs) -> list[str]:
    """The responses of :func:`generate_replies` (same arguments) without the finished flags."""
    return generate_replies(model, tokenizer, prompts, *args, **kwargs)[0]


def generate_with_stop(model, tokenizer, prompt, max_new_tokens: int = 32) -> tuple[str, bool]:
    """One greedy reply and whether it ended with the end-of-turn token within ``max_new_tokens``."""
    new = sample_token_ids(
        model, tokenizer, [prompt_token_ids(tokenizer, prompt, True)], max_new_tokens, temperature=0.0
    )[0]
    return tokenizer.decode(new, skip_special_tokens=True).strip(), tokenizer.eos_token_id in new


@torch.no_grad()
def sample_token_ids(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    desc: str = "generating",
    show_progress: bool = False,
    synced: bool = False,
) -> list[list[int]]:
    """Response token ids for each prompt (sampled; greedy when ``temperature`` is 0), cut after the
    first EOS (kept, so RL learns to stop) and free of padding. Prompts are length-sorted and
    left-padded in batches. Sampling uses the global torch RNG. ``synced``: weights are sharded across
    processes (ZeRO-3), so each keeps stepping until all are done."""
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    responses: list[list[int]] = [[] for _ in prompt_ids]
    device = next(model.parameters()).device
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    )
    eos = tokenizer.eos_token_id
    with in_eval_mode(model):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress, unit="batch"):
            idx = order[start : start + batch_size]
            width = max(len(prompt_ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, i in enumerate(idx):
                input_ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
                attention_mask[row, width - len(prompt_ids[i]) :] = 1
            # use_cache: a model prepared for gradient checkpointing has it off, which would make generation quadratic
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
                use_cache=True,
                **sampling,
                **({"synced_gpus": True} if synced else {}),
            )
            for i, new in zip(idx, output[:, width:].tolist()):  # one read of the batch's new tokens
                responses[i] = new[: new.index(eos) + 1] if eos in new else new
    return responses
