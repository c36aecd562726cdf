"""The pre-flight checks of the rows themselves, one function each: ``check(ctx) -> Check`` (count,
duplicates, train/eval leakage, near-identical pairs, the held-out split, and the length limits)."""

from __future__ import annotations

import difflib
import math

from alignkit.diagnose.context import (
    MANY_ROWS,
    MIN_EVAL,
    NEAR_IDENTICAL,
    SMALL_DATA,
    Check,
    Context,
    View,
    percentile,
    token_lengths,
    where_of,
)


def check_count(ctx: Context) -> Check:
    """Fail with fewer rows than one batch; warn below a few thousand (noisy, overfits fast)."""
    n, unit = len(ctx.train), "pairs" if ctx.paired else "examples"
    batch = ctx.config.per_device_train_batch_size
    if n < batch:
        return Check(
            "data size",
            "fail",
            f"{n} training {unit}, fewer than one batch "
            f"(per_device_train_batch_size {batch}): every step would see the same "
            "few rows.",
            f"Add data (hundreds of {unit} at least), or check that train_data and the eval split are what you meant.",
        )
    if n < SMALL_DATA:
        return Check(
            "data size",
            "warn",
            f"{n} training {unit} (fewer than {SMALL_DATA:,}): results will be noisy and overfitting comes fast.",
            "Add data if you can; with little data keep beta at 0.1 or more, the "
            "learning rate low, 1-3 epochs, and watch for accuracy near 1.0 early.",
        )
    return Check("data size", "pass", f"{n} training {unit}.")


def check_duplicates(ctx: Context) -> Check:
    """Warn or fail when rows repeat (identical prompt and responses)."""
    seen: dict[str, View] = {}
    dupes = []
    for v in ctx.train:
        if v.key in seen:
            dupes.append(v)
        else:
            seen[v.key] = v
    if dupes:
        return Check(
            "duplicates",
            "warn",
            f"{len(dupes)} training rows repeat an earlier row ({where_of(dupes)}).",
            "Deduplicate: repeats weigh some preferences more and leak into eval splits.",
        )
    return Check("duplicates", "pass", "no repeated training rows.")


def check_leakage(ctx: Context) -> Check:
    """Fail when eval rows also appear in training; warn when eval prompts do."""
    train_keys = {v.key for v in ctx.train}
    train_prompts = {v.prompt_key for v in ctx.train}
    same = [v for v in ctx.eval if v.key in train_keys]
    if same:
        return Check(
            "train/eval leakage",
            "fail",
            f"{len(same)} of {len(ctx.eval)} eval rows are also training rows "
            f"({where_of(same)}): eval would measure memorisation.",
            "Remove them from eval_data (or deduplicate before the eval_split).",
        )
    shared = [v for v in ctx.eval if v.prompt_key in train_prompts]
    if shared:
        return Check(
            "train/eval leakage",
            "warn",
            f"{len(shared)} of {len(ctx.eval)} eval prompts also appear in training ({where_of(shared)}).",
            "Hold out whole prompts so eval measures generalisation.",
        )
    return Check(
        "train/eval leakage", "pass", "no eval prompt appears in training." if ctx.eval else "no eval data to compare."
    )


def check_near_identical(ctx: Context) -> Check | None:
    """Pairs whose chosen and rejected are identical or nearly so teach nothing (None: not pairs)."""
    if not ctx.paired:
        return None
    same = [v for v in ctx.train if v.responses[0].strip() == v.responses[1].strip()]
    if len(same) > MANY_ROWS * len(ctx.train):
        return Check(
            "chosen vs rejected",
            "fail",
            f"{len(same)} of {len(ctx.train)} pairs have chosen identical to "
            f"rejected ({where_of(same)}): they teach nothing and dilute every batch.",
            "Rebuild the pairs (a mix-up of columns?), or drop those rows.",
        )
    close = [
        v
        for v in ctx.train
        if difflib.SequenceMatcher(None, v.responses[0], v.responses[1], autojunk=False).ratio() >= NEAR_IDENTICAL
    ]
    if close:
        return Check(
            "chosen vs rejected",
            "warn",
            f"{len(close)} pairs have near-identical chosen and rejected "
            f"(≥{NEAR_IDENTICAL:.0%} similar; {where_of(close)}).",
            "Such pairs carry almost no signal and can teach surface quirks; drop them or make the difference real.",
        )
    return Check("chosen vs rejected", "pass", "every chosen differs clearly from its rejected.")


def check_split(ctx: Context) -> Check:
    """Warn when there is no held-out data, or too little to read eval metrics from."""
    if not ctx.eval:
        return Check(
            "eval split",
            "warn",
            "no held-out data: training cannot show eval metrics or divergence.",
            "Set eval_data, or eval_split (e.g. 0.1).",
        )
    if len(ctx.eval) < MIN_EVAL:
        return Check(
            "eval split",
            "warn",
            f"only {len(ctx.eval)} eval rows: accuracy moves in steps of {1 / len(ctx.eval):.2f}, too coarse to trust.",
            f"Hold out at least {MIN_EVAL} rows (more is better).",
        )
    return Check("eval split", "pass", f"{len(ctx.eval)} eval rows held out.")


def check_max_length(ctx: Context) -> Check:
    """How much of the training data ``max_length`` truncates (warn above 5%, fail above half)."""
    totals = token_lengths(ctx)["total"]
    max_length = ctx.config.max_length
    p95 = percentile(totals, 95)
    cut = sum(t > max_length for t in totals) / len(totals)
    detail = (
        f"p95 of prompt+response is {p95:.0f} tokens; max_length {max_length} truncates {cut:.1%} of training rows."
    )
    if cut > 0.05:
        return Check(
            "max_length",
            "fail" if cut > MANY_ROWS * 2 else "warn",
            detail,
            f"Raise max_length to about {math.ceil(p95 / 64) * 64} (p95), or "
            "shorten the data: truncated responses lose their endings, often the "
            "part that differs.",
        )
    return Check("max_length", "pass", detail)


def check_max_prompt_length(ctx: Context) -> Check:
    """How many prompts ``max_prompt_length`` cuts, and whether it leaves responses room."""
    prompts = token_lengths(ctx)["prompt"]
    cfg = ctx.config
    if cfg.max_prompt_length is None:
        return Check(
            "max_prompt_length",
            "pass",
            "no separate prompt limit (as in TRL): pairs are cut to max_length "
            f"keeping the response (prompt p95 {percentile(prompts, 95):.0f} "
            "tokens).",
        )
    ratio = cfg.max_prompt_length / cfg.max_length
    cut = sum(p > cfg.max_prompt_length for p in prompts) / len(prompts)
    detail = (
        f"max_prompt_length {cfg.max_prompt_length} is {ratio:.0%} of "
        f"max_length; {cut:.1%} of prompts are cut (p95 {percentile(prompts, 95):.0f} "
        "tokens)."
    )
    if not 0.25 <= ratio <= 0.75 or cut > 0.05:
        return Check(
            "max_prompt_length",
            "warn",
            detail,
            "About half of max_length is typical, large enough that prompts keep their question.",
        )
    return Check("max_prompt_length", "pass", detail)


DATA_CHECKS = (check_count, check_duplicates, check_leakage, check_near_identical, check_split)
