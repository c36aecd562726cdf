"""Per training method, what reads its data and how its trainer tokenizes it: one place, used by the
trainers and by the doctor, so the pre-flight measures exactly the tokens the run will train on."""

from __future__ import annotations

from typing import Callable

from alignkit.data.kto import kto_rows, load_kto_data
from alignkit.data.preference import load_preference_data
from alignkit.data.sft import load_sft_data, sft_rows
from alignkit.data.tokenize import TokenizedRows, pair_rows, reward_pair_rows


def data_loader(method: str) -> Callable[..., list]:
    """The validating loader of ``method``'s rows: KTO's unpaired rows, SFT rows, or preference pairs."""
    return {"kto": load_kto_data, "sft": load_sft_data}.get(method, load_preference_data)


def tokenize_for(method: str, examples: list, tokenizer, config) -> TokenizedRows:
    """``examples`` tokenized as the trainer of ``method`` feeds them, with ``config``'s length and template
    settings (KTO: also its seed, which pairs each row with another's completion for the KL estimate)."""
    settings = (tokenizer, config.max_length, config.max_prompt_length, config.apply_chat_template)
    if method == "kto":
        return kto_rows(examples, *settings, seed=config.seed)
    if method == "sft":
        return sft_rows(examples, *settings)
    if method == "reward":
        return reward_pair_rows(examples, *settings)
    return pair_rows(examples, *settings)
