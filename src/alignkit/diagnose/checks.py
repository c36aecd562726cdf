"""The pre-flight checks, one function each: ``check(ctx) -> Check``.

A :class:`Context` holds what every check may look at: the config, the method, the validated
train/eval examples (as :class:`View` s: a prompt and its responses), the tokenizer and, when
loaded, the model. Checks never train or write anything.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alignkit.data.methods import tokenize_for
from alignkit.engine.generation import generate_with_stop
from alignkit.engine.logprobs import unwrapped
from alignkit.engine.reference import precompute_wanted

Status = Literal["pass", "warn", "fail"]

# Learning-rate ranges: the usual full fine-tuning range, and ~5x more for LoRA adapters.
LR_RANGE = {"full": (1e-6, 1e-4), "lora": (1e-6, 5e-4)}
BETA_RANGE = (0.05, 1.0)
SIMPO_BETA_RANGE = (1.0, 10.0)  # SimPO's beta scales length-normalised log-probs: the paper uses 2-2.5
SMALL_DATA = 1000
MIN_EVAL = 20
NEAR_IDENTICAL = 0.9
# a flaw on more than this fraction of rows (chosen == rejected) ruins a run;
# truncation: on more than twice it (most rows)
MANY_ROWS = 0.25
TEMPLATE_MARKERS = (
    "<|im_start|>",
    "<|start_header_id|>",
    "[INST]",
    "<start_of_turn>",
    "<|user|>",
    "### Instruction",
    "### Response",
)
PROBE_PROMPT = "What is the capital of France?"
ROLE_LEAKS = ("<|im_start|>", "\nuser", "\nUser:", "user\n", "Human:", "### Instruction")


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class View:
    """One example as the checks see it: the prompt, its response(s), where it came from."""

    prompt: object
    responses: tuple[str, ...]
    where: str

    @property
    def key(self) -> str:
        return repr((self.prompt, self.responses))

    @property
    def prompt_key(self) -> str:
        return repr(self.prompt)


@dataclass
class Context:
    config: object
    method: str  # dpo, kto, orpo, sft, reward
    train: list[View]
    eval: list[View]
    tokenizer: object = None
    model: object = None
    lengths: dict = field(default_factory=dict)  # filled once by token_lengths(), or by the trainer's tokenization
    examples: list = field(default_factory=list)  # the training rows the views were made from

    @property
    def paired(self) -> bool:
        return self.method in ("dpo", "orpo", "reward")


def views_of(examples: list) -> list[View]:
    """Preference pairs, KTO rows or SFT rows as Views."""
    out = []
    for e in examples:
        if hasattr(e, "chosen"):
            out.append(View(e.prompt, (e.chosen, e.rejected), e.where))
        elif hasattr(e, "desirable"):
            out.append(View(e.prompt, (e.completion,), e.where))
        elif getattr(e, "messages", None) is not None:
            replies = tuple(m["content"] for m in e.messages if m["role"] == "assistant")
            out.append(View([m for m in e.messages if m["role"] != "assistant"], replies, e.where))
        else:
            out.append(View(e.prompt, (e.completion,), e.where))
    return out


def _where(views: list[View], limit: int = 3) -> str:
    shown = ", ".join(v.where for v in views[:limit])
    return shown + (f" and {len(views) - limit} more" if len(views) > limit else "")


def check_count(ctx: Context) -> Check:
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
            f"{len(dupes)} training rows repeat an earlier row ({_where(dupes)}).",
            "Deduplicate: repeats weigh some preferences more and leak into eval splits.",
        )
    return Check("duplicates", "pass", "no repeated training rows.")


def check_leakage(ctx: Context) -> Check:
    train_keys = {v.key for v in ctx.train}
    train_prompts = {v.prompt_key for v in ctx.train}
    same = [v for v in ctx.eval if v.key in train_keys]
    if same:
        return Check(
            "train/eval leakage",
            "fail",
            f"{len(same)} of {len(ctx.eval)} eval rows are also training rows "
            f"({_where(same)}): eval would measure memorisation.",
            "Remove them from eval_data (or deduplicate before the eval_split).",
        )
    shared = [v for v in ctx.eval if v.prompt_key in train_prompts]
    if shared:
        return Check(
            "train/eval leakage",
            "warn",
            f"{len(shared)} of {len(ctx.eval)} eval prompts also appear in training ({_where(shared)}).",
            "Hold out whole prompts so eval measures generalisation.",
        )
    return Check(
        "train/eval leakage", "pass", "no eval prompt appears in training." if ctx.eval else "no eval data to compare."
    )


def check_near_identical(ctx: Context) -> Check | None:
    if not ctx.paired:
        return None
    same = [v for v in ctx.train if v.responses[0].strip() == v.responses[1].strip()]
    if len(same) > MANY_ROWS * len(ctx.train):
        return Check(
            "chosen vs rejected",
            "fail",
            f"{len(same)} of {len(ctx.train)} pairs have chosen identical to "
            f"rejected ({_where(same)}): they teach nothing and dilute every batch.",
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
            f"(≥{NEAR_IDENTICAL:.0%} similar; {_where(close)}).",
            "Such pairs carry almost no signal and can teach surface quirks; drop them or make the difference real.",
        )
    return Check("chosen vs rejected", "pass", "every chosen differs clearly from its rejected.")


def check_chat_template(ctx: Context) -> Check:
    tok, config = ctx.tokenizer, ctx.config
    marked = [v for v in ctx.train if any(m in str(v.prompt) for m in TEMPLATE_MARKERS)]
    if marked:
        return Check(
            "chat template",
            "warn",
            f"{len(marked)} prompts already contain chat-template markers "
            f"({_where(marked)}); they would be templated twice.",
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


def token_lengths(ctx: Context) -> dict:
    """Prompt and prompt+response token lengths (before truncation) of the training rows, tokenized as the
    method's trainer tokenizes them (once; a training run hands over its own tokenization)."""
    if not ctx.lengths:
        rows = tokenize_for(ctx.method, ctx.examples, ctx.tokenizer, ctx.config)
        ctx.lengths = {"prompt": rows.prompt_lengths, "total": rows.total_lengths}
    return ctx.lengths


def percentile(values: list[int], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def check_max_length(ctx: Context) -> Check:
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


def available_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_reference(ctx: Context) -> Check | None:
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


def check_split(ctx: Context) -> Check:
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


def check_output_dir(ctx: Context) -> Check:
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


DATA_CHECKS = (check_count, check_duplicates, check_leakage, check_near_identical, check_split)
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
