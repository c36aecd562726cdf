"""The pre-flight checks of the set-up, one function each: ``check(ctx) -> Check`` (chat template, pad
token, the starting model, learning rate, beta, the length limits, the reference model, the output
folder). The row checks are in :mod:`~alignkit.diagnose.data_checks`; the context in
:mod:`~alignkit.diagnose.context`."""

from __future__ import annotations

import os
from pathlib import Path

from alignkit.diagnose.context import (
    BETA_RANGE,
    LR_RANGE,
    PROBE_PROMPT,
    ROLE_LEAKS,
    SIMPO_BETA_RANGE,
    SMALL_DATA,
    TEMPLATE_MARKERS,
    Check,
    Context,
    where_of,
)
from alignkit.diagnose.data_checks import check_max_length, check_max_prompt_length
from alignkit.engine.generation import generate_with_stop
from alignkit.engine.logprobs import unwrapped
from alignkit.engine.reference import precompute_wanted


def check_chat_template(ctx: Context) -> Check:
    """Warn when prompts carry template markers already, or when the tokenizer has no chat template."""
    tok, config = ctx.tokenizer, ctx.config
    marked = [v for v in ctx.train if any(m in str(v.prompt) for m in TEMPLATE_MARKERS)]
    if marked:
        return Check(
            "chat template",
            "warn",
            f"{len(marked)} prompts already contain chat-template markers "
            f"({where_of(marked)}); they would be templated twice.",
            "Store plain prompt text (or messages) and let alignkit apply the model's own template.",
        )
    if not getattr(tok, "chat_template", None):
        return Check(
            "chat template",
            "warn",
            "the tokenizer has no chat template: prompts are used as raw text.",
            "Start from an instruction-tuned (SFT) model with a chat template, or run alignkit sft first.",
        )
    if not getattr(config, "apply_chat_template", True):
        return Check(
            "chat template",
            "warn",
            "apply_chat_template is false: prompts are not formatted the way the model was tuned.",
            "Set apply_chat_template: true.",
        )
    return Check("chat template", "pass", "prompts are formatted with the model's own chat template.")


def check_pad_token(ctx: Context) -> Check:
    """Warn when alignkit had to give the tokenizer a pad token."""
    tok = ctx.tokenizer
    if getattr(tok, "alignkit_pad_added", False):
        return Check(
            "pad token",
            "warn",
            f"the tokenizer has no pad token; alignkit pads with {tok.pad_token!r} "
            "(padding is masked by position, so this is safe here).",
            "Set tokenizer.pad_token before exporting to tools that mask labels by "
            "pad id, or EOS stops being learned there.",
        )
    return Check("pad token", "pass", f"pad token {tok.pad_token!r}.")


def looks_like_assistant(reply: str, stopped: bool) -> tuple[bool, str]:
    """Does a reply to PROBE_PROMPT read like an instruction-tuned model's? (ok, why not)."""
    if any(marker in reply for marker in ROLE_LEAKS):
        return False, "it went on to write the next turn itself"
    if not stopped:
        return False, "it did not stop (no end-of-turn token)"
    if "paris" not in reply.lower():
        return False, "it did not answer the question"
    return True, ""


def check_starting_model(ctx: Context) -> Check | None:
    """Whether the starting model answers a chat probe like an SFT/instruct model (DPO wants one); None
    for reward models."""
    if (
        ctx.model is None
        or ctx.method == "reward"
        or not getattr(unwrapped(ctx.model), "can_generate", lambda: False)()
    ):
        return None  # a reward model (sequence classifier, possibly PEFT-wrapped) answers no probe

    reply, stopped = generate_with_stop(ctx.model, ctx.tokenizer, PROBE_PROMPT, max_new_tokens=32)
    ok, why = looks_like_assistant(reply, stopped)
    if ok and getattr(ctx.tokenizer, "chat_template", None):
        return Check("starting model", "pass", f"answers like an assistant ({PROBE_PROMPT!r} -> {reply[:60]!r}).")
    if ctx.method in ("orpo", "sft"):
        return Check(
            "starting model", "pass", f"looks like a base model ({why or 'no chat template'}); fine for {ctx.method}."
        )
    return Check(
        "starting model",
        "warn",
        f"does not look SFT'd: asked {PROBE_PROMPT!r}, {why or 'it has no chat template'} ({reply[:60]!r}).",
        "Preference methods start from an SFT model: run alignkit sft first, "
        "or use alignkit orpo (one stage from a base model).",
    )


def check_learning_rate(ctx: Context) -> Check:
    """The learning rate against the usual range for full fine-tuning or LoRA (fail an order of magnitude out)."""
    lr, kind = ctx.config.learning_rate, "lora" if ctx.config.use_peft else "full"
    low, high = LR_RANGE[kind]
    what = "LoRA" if kind == "lora" else "full fine-tuning"
    if not low <= lr <= high:
        small = f" With fewer than {SMALL_DATA:,} rows, stay in the lower half." if len(ctx.train) < SMALL_DATA else ""
        ruinous = lr >= 10 * high or lr <= low / 10  # an order of magnitude out: the run will diverge or not move
        return Check(
            "learning rate",
            "fail" if ruinous else "warn",
            f"learning_rate {lr:g} is {'an order of magnitude ' if ruinous else ''}outside "
            f"{low:g}-{high:g}, the usual range for {what}.",
            f"Typical: 5e-7-5e-6 for full DPO, 5e-5-2e-4 with LoRA.{small}",
        )
    return Check("learning rate", "pass", f"learning_rate {lr:g} (usual for {what}: {low:g}-{high:g}).")


def check_beta(ctx: Context) -> Check | None:
    """Beta against its usual range (SimPO's is its own); None for methods without beta."""
    beta = getattr(ctx.config, "beta", None)
    if beta is None:
        return None
    simpo = getattr(ctx.config, "loss_type", "") == "simpo"
    low, high = SIMPO_BETA_RANGE if simpo else BETA_RANGE
    if not low <= beta <= high:
        ruinous = beta >= 10 * high or beta <= low / 10
        advice = (
            "SimPO uses beta 2-2.5."
            if simpo
            else "0.1 is the usual start; lower (0.05) drifts further from the "
            "reference, higher (0.5-1) stays closer: use higher values for small "
            "or noisy data."
        )
        return Check(
            "beta",
            "fail" if ruinous else "warn",
            f"beta {beta:g} is {'an order of magnitude ' if ruinous else ''}outside {low:g}-{high:g}.",
            advice,
        )
    return Check("beta", "pass", f"beta {beta:g}.")


def available_memory_bytes() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_reference(ctx: Context) -> Check | None:
    """How the reference model is held (adapters off, a frozen copy, or precomputed log-probs) and whether a
    frozen copy fits in memory."""
    cfg = ctx.config
    if ctx.method in ("sft", "reward", "orpo") or getattr(cfg, "loss_type", "") == "simpo":
        return Check(
            "reference model", "pass", f"{ctx.method if ctx.method != 'dpo' else 'simpo'} needs no reference model."
        )
    if cfg.use_peft:
        return Check(
            "reference model",
            "pass",
            "LoRA: the reference is the policy with adapters disabled (no second copy in memory).",
        )
    if precompute_wanted(cfg, len(ctx.train)):
        return Check(
            "reference model",
            "pass",
            "reference log-probs are computed once up front and cached; no frozen copy is kept.",
        )
    params = sum(p.numel() * p.element_size() for p in ctx.model.parameters()) if ctx.model is not None else 0
    if params and 4 * params > 0.5 * available_memory_bytes():  # weights + frozen copy + grads + AdamW ~ 4x
        return Check(
            "reference model",
            "warn",
            f"full fine-tuning keeps a frozen reference copy ({params / 2**30:.1f} "
            "GiB of weights each): about 4x the weights will not fit comfortably "
            f"in {available_memory_bytes() / 2**30:.0f} GiB.",
            "Use use_peft: true (reference = adapters off), or precompute_ref_log_probs: true.",
        )
    return Check(
        "reference model",
        "pass",
        "full fine-tuning with a frozen reference copy (precompute_ref_log_probs: true drops it).",
    )


def check_output_dir(ctx: Context) -> Check:
    """Fail when ``output_dir`` holds files and neither overwrite nor resume is set."""
    cfg = ctx.config
    path = Path(cfg.output_dir)
    busy = path.is_dir() and any(path.iterdir())
    if busy and not (cfg.overwrite or cfg.resume):
        return Check(
            "output_dir",
            "fail",
            f"{path} exists and is not empty; training would refuse to start.",
            "Choose another output_dir, or pass --overwrite (replace) or --resume (continue).",
        )
    if cfg.resume and not busy:
        return Check("output_dir", "fail", f"--resume, but {path} holds no run.", "Drop --resume.")
    return Check("output_dir", "pass", f"{path} {'will be replaced' if busy and cfg.overwrite else 'is ready'}.")


SETUP_CHECKS = (
    check_chat_template,
    check_pad_token,
    check_starting_model,
    check_learning_rate,
    check_beta,
    check_max_length,
    check_max_prompt_length,
    check_reference,
)
