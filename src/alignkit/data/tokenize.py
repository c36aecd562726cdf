"""Tokenization: chat template on the prompt, EOS after each response, response-keeping truncation.

Prompt and response are tokenized separately and concatenated, so the boundary between them (and
therefore the loss mask) is exact by construction, whatever the tokenizer does at the join.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.data.preference import Messages, PreferenceExample
from alignkit.errors import AlignkitError


@dataclass(frozen=True)
class TokenizedPair:
    """A pair's token ids, fitted to the length limits: the prompt, then each response (ending with EOS)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


@dataclass
class TokenizedRows:
    """A data set tokenized once, as its trainer feeds it: the items the collator takes, and each row's prompt
    and prompt+response token counts before truncation (the pre-flight's length checks read these)."""

    items: list
    prompt_lengths: list[int] = field(default_factory=list)
    total_lengths: list[int] = field(default_factory=list)
    dropped: int = 0  # rows left out (SFT: no trainable token after truncation)

    def add_lengths(self, prompt: int, total: int) -> None:
        """Record one row's untruncated prompt and prompt+response lengths."""
        self.prompt_lengths.append(prompt)
        self.total_lengths.append(total)

    def add_pair(
        self, prompt: list[int], chosen: list[int], rejected: list[int], max_length: int, max_prompt_length: int | None
    ) -> None:
        """Record a pair's untruncated lengths and add it, fitted by :func:`truncate_pair`, as an item."""
        self.add_lengths(len(prompt), len(prompt) + max(len(chosen), len(rejected)))
        self.items.append(truncate_pair(prompt, chosen, rejected, max_length, max_prompt_length))


def ensure_pad_token(tokenizer) -> None:
    """Give the tokenizer a pad token if it lacks one. Padding is always masked, so any id is safe."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        tokenizer.alignkit_pad_added = True  # the doctor reports it
        if tokenizer.pad_token_id is None:
            raise AlignkitError("the tokenizer has no pad, eos or unk token to pad with; set tokenizer.pad_token")


def as_messages(prompt: str | Messages) -> Messages:
    """A plain prompt as a one-message conversation (a conversation as it is)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def prompt_token_ids(
    tokenizer, prompt: str | Messages, apply_chat_template: bool = True, system_prompt: str | None = None
) -> list[int]:
    """Token ids of the prompt, formatted with the model's chat template when it has one."""
    if apply_chat_template and tokenizer.chat_template:
        messages = as_messages(prompt)
        if system_prompt is not None:
            messages = [{"role": "system", "content": system_prompt}] + [m for m in messages if m["role"] != "system"]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if not isinstance(prompt, str):
        raise AlignkitError(
            "conversational prompts need a tokenizer with a chat template (this one has none, or "
            "apply_chat_template is false); use plain-text prompts or a chat model"
        )
    text = prompt if system_prompt is None else f"{system_prompt}\n\n{prompt}"
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def response_token_ids(tokenizer, text: str) -> list[int]:
    """Response tokens followed by EOS (so the model learns where to stop)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise AlignkitError("the tokenizer has no eos token; responses must end with one")
    return ids + [tokenizer.eos_token_id]


def prompt_limit(max_length: int, max_prompt_length: int | None) -> int:
    """The most prompt tokens kept: ``max_prompt_length``, or with None (no separate limit) ``max_length``."""
    return max_length if max_prompt_length is None else max_prompt_length


def truncate_pair(
    prompt: list[int], chosen: list[int], rejected: list[int], max_length: int, max_prompt_length: int | None
) -> TokenizedPair:
    """Fit prompt+response into ``max_length`` while keeping the responses.

    The prompt is cut from the left to ``max_prompt_length`` (None: no separate limit), then further
    (never below half of ``max_length``) until the longer response fits; only then are responses cut
    from the right. Chosen and rejected always share the same prompt tokens.
    """
    prompt = prompt[-prompt_limit(max_length, max_prompt_length) :]
    longest = max(len(chosen), len(rejected))
    keep = min(len(prompt), max(max_length - longest, max_length // 2))
    prompt = prompt[len(prompt) - keep :]
    budget = max_length - len(prompt)
    return TokenizedPair(prompt, chosen[:budget], rejected[:budget])


def pair_rows(
    examples: list[PreferenceExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
) -> TokenizedRows:
    """Pairs as DPO and ORPO train on them: the templated prompt, each response with EOS, fitted by
    :func:`truncate_pair`; items are :class:`TokenizedPair`."""
    rows = TokenizedRows([])
    for example in examples:
        prompt = prompt_token_ids(tokenizer, example.prompt, apply_chat_template)
        chosen = response_token_ids(tokenizer, example.chosen)
        rejected = response_token_ids(tokenizer, example.rejected)
        rows.add_pair(prompt, chosen, rejected, max_length, max_prompt_length)
    return rows


def tokenize_pairs(
    examples: list[PreferenceExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
) -> list[TokenizedPair]:
    """The :class:`TokenizedPair` of each example (see :func:`pair_rows`)."""
    return pair_rows(examples, tokenizer, max_length, max_prompt_length, apply_chat_template).items


def reward_text_parts(
    tokenizer, prompt: str | Messages, response: str, apply_chat_template: bool = True
) -> tuple[str, str]:
    """(prompt text, response text) as a reward model reads them: with a chat template, the whole
    exchange rendered by the template (the response part ends with the end-of-turn marker)."""
    if apply_chat_template and tokenizer.chat_template:
        messages = as_messages(prompt)
        before = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(before):
            raise AlignkitError("the chat template does not render the prompt as a prefix of the conversation")
        return before, full[len(before) :]
    if not isinstance(prompt, str):
        raise AlignkitError("conversational prompts need a tokenizer with a chat template")
    return prompt, response


def reward_text(tokenizer, prompt: str | Messages, response: str, apply_chat_template: bool = True) -> str:
    """The exact text a trained reward model scores: ``model(**tokenizer(text, add_special_tokens=False))``
    when a chat template is used (the template adds the special tokens), else ``tokenizer(text)``."""
    return "".join(reward_text_parts(tokenizer, prompt, response, apply_chat_template))


def reward_pair_rows(
    examples: list[PreferenceExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
) -> TokenizedRows:
    """Pairs for a reward model: no EOS is appended (the score is read at the last token, which
    must not be the pad token, or transformers' sequence classifier would read elsewhere)."""
    templated = apply_chat_template and bool(tokenizer.chat_template)
    rows = TokenizedRows([])
    for example in examples:
        prompt_text, chosen_text = reward_text_parts(tokenizer, example.prompt, example.chosen, apply_chat_template)
        _, rejected_text = reward_text_parts(tokenizer, example.prompt, example.rejected, apply_chat_template)
        prompt = tokenizer(prompt_text, add_special_tokens=not templated)["input_ids"]
        chosen, rejected = (
            tokenizer(text, add_special_tokens=False)["input_ids"] for text in (chosen_text, rejected_text)
        )
        rows.add_pair(prompt, chosen, rejected, max_length, max_prompt_length)
    return rows


def tokenize_reward_pairs(
    examples: list[PreferenceExample],
    tokenizer,
    max_length: int,
    max_prompt_length: int | None,
    apply_chat_template: bool = True,
) -> list[TokenizedPair]:
    """The :class:`TokenizedPair` of each example as a reward model reads it (see :func:`reward_pair_rows`)."""
    return reward_pair_rows(examples, tokenizer, max_length, max_prompt_length, apply_chat_template).items
