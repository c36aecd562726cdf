"""What the pre-flight checks look at, and the helpers they share.

A :class:`Context` holds the config, the method, the validated train/eval examples (as :class:`View` s:
a prompt and its responses), the tokenizer and, when loaded, the model. The checks themselves are in
:mod:`~alignkit.diagnose.data_checks` (the rows) and :mod:`~alignkit.diagnose.checks` (the set-up);
they never train or write anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from alignkit.data.methods import tokenize_for

Status = Literal["pass", "warn", "fail"]
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
    """One check's outcome: pass, warn or fail, what was found, and how to fix it."""

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
        """Identity of the row (prompt and responses), for finding duplicates and leaks."""
        return repr((self.prompt, self.responses))

    @property
    def prompt_key(self) -> str:
        """Identity of the prompt alone."""
        return repr(self.prompt)


@dataclass
class Context:
    """What the checks look at: the config, the method, the rows as views, the tokenizer and the model."""

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
        """Whether the method trains on pairs (DPO, ORPO, reward) rather than single responses."""
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
        else:  # prompt/completion, or plain text (no prompt)
            out.append(View(e.prompt if e.prompt is not None else "", (e.completion,), e.where))
    return out


def where_of(views: list[View], limit: int = 3) -> str:
    """The first ``limit`` rows' locations (and how many more), for a finding's text."""
    shown = ", ".join(v.where for v in views[:limit])
    return shown + (f" and {len(views) - limit} more" if len(views) > limit else "")


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
