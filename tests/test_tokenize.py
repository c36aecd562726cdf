"""Tokenization: chat template on the prompt, EOS after responses, prompt masking, truncation, pad token."""

import pytest
import torch
from conftest import build_tokenizer

from alignkit.data.collate import PreferenceCollator
from alignkit.data.preference import PreferenceExample
from alignkit.data.tokenize import (
    ensure_pad_token,
    prompt_token_ids,
    response_token_ids,
    reward_text,
    tokenize_pairs,
    truncate_pair,
)
from alignkit.errors import AlignkitError


def test_prompt_uses_chat_template_and_response_ends_with_eos(tiny_tokenizer):
    example = PreferenceExample("What is 2 + 3?", "5.", "Let me think.", "x:1")
    [pair] = tokenize_pairs([example], tiny_tokenizer, max_length=128, max_prompt_length=64)
    expected_prompt = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.decode(pair.prompt_ids) == expected_prompt
    assert pair.chosen_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(pair.chosen_ids[:-1]) == "5."
    assert tiny_tokenizer.decode(pair.rejected_ids[:-1]) == "Let me think."


def test_conversational_prompt_keeps_system_and_turns(tiny_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    [pair] = tokenize_pairs([PreferenceExample(messages, "hi", "hello world", "x:1")], tiny_tokenizer, 128, 64)
    assert (
        tiny_tokenizer.decode(pair.prompt_ids)
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    )


def test_loss_mask_covers_exactly_response_and_eos(tiny_tokenizer):
    ensure_pad_token(tiny_tokenizer)
    example = PreferenceExample("What is 2 + 3?", "5.", "Let me think.", "x:1")
    [pair] = tokenize_pairs([example], tiny_tokenizer, 128, 64)
    for side in ("right", "left"):
        batch = PreferenceCollator(tiny_tokenizer.pad_token_id, padding_free=False, padding_side=side)([{"pair": pair}])
        for row, response in ((0, pair.chosen_ids), (1, pair.rejected_ids)):
            scored = batch["seq_index"][row] == row
            assert batch["target_ids"][row][scored].tolist() == response  # response tokens + EOS, nothing else
            # every scored target is the real next input token
            positions = scored.nonzero().squeeze(1)
            assert torch.equal(batch["input_ids"][row][positions + 1], batch["target_ids"][row][positions])


def test_truncation_keeps_responses_and_trims_prompt_from_left():
    prompt, chosen, rejected = list(range(100, 140)), list(range(10)), list(range(20))
    pair = truncate_pair(prompt, chosen, rejected, max_length=48, max_prompt_length=30)
    assert pair.prompt_ids == list(range(112, 140))  # 48 - 20 = 28 prompt tokens kept, from the right end
    assert pair.chosen_ids == chosen and pair.rejected_ids == rejected
    # responses longer than the budget: the prompt keeps half of max_length, responses are cut from the right
    pair = truncate_pair(prompt, list(range(60)), list(range(5)), max_length=40, max_prompt_length=30)
    assert pair.prompt_ids == list(range(120, 140))
    assert pair.chosen_ids == list(range(20)) and pair.rejected_ids == list(range(5))
    assert len(pair.prompt_ids) + len(pair.chosen_ids) <= 40


def test_max_prompt_length_applies_even_when_everything_fits():
    pair = truncate_pair(list(range(50)), [1], [2], max_length=200, max_prompt_length=8)
    assert pair.prompt_ids == list(range(42, 50))


def test_no_prompt_limit_keeps_the_responses_and_cuts_the_prompt_from_the_left():
    pair = truncate_pair(list(range(50)), [1, 1, 1], [2], max_length=40, max_prompt_length=None)
    assert (
        pair.prompt_ids == list(range(13, 50)) and pair.chosen_ids == [1, 1, 1] and pair.rejected_ids == [2]
    )  # 37 + 3 = 40
    assert truncate_pair(list(range(10)), [1], [2], max_length=40, max_prompt_length=None).prompt_ids == list(range(10))


def test_pad_token_added_when_missing():
    tokenizer = build_tokenizer(with_pad=False)
    assert tokenizer.pad_token_id is None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_collator_orders_chosen_then_rejected_and_passes_reference_logps(tiny_tokenizer):
    ensure_pad_token(tiny_tokenizer)
    examples = [PreferenceExample(f"q{i}", f"good {i}", f"bad answer {i}", "x") for i in range(3)]
    pairs = tokenize_pairs(examples, tiny_tokenizer, 64, 32)
    items = [{"pair": p, "ref_logps": [-1.0 - i, -10.0 - i]} for i, p in enumerate(pairs)]
    batch = PreferenceCollator(tiny_tokenizer.pad_token_id, padding_free=False)(items)
    assert batch["input_ids"].shape[0] == 6
    assert batch["ref_logps"].tolist() == [-1.0, -2.0, -3.0, -10.0, -11.0, -12.0]
    decoded = tiny_tokenizer.decode(batch["input_ids"][4][batch["attention_mask"][4].bool()])
    assert decoded.endswith("bad answer 1<|im_end|>")


def test_prompts_and_reward_texts_with_and_without_a_template(tiny_tokenizer):
    chat = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    replaced = [{"role": "system", "content": "Old."}, {"role": "user", "content": "hi"}]
    assert tiny_tokenizer.decode(prompt_token_ids(tiny_tokenizer, replaced, system_prompt="Be brief.")) == chat
    plain = prompt_token_ids(tiny_tokenizer, "hi", apply_chat_template=False, system_prompt="Be brief.")
    assert tiny_tokenizer.decode(plain) == "Be brief.\n\nhi"
    assert reward_text(tiny_tokenizer, "hi", "5.") == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n5.<|im_end|>\n"
    )  # the whole exchange as the template renders it, end-of-turn included
    assert reward_text(tiny_tokenizer, "hi", "5.", apply_chat_template=False) == "hi5."
    with pytest.raises(AlignkitError, match="conversational prompts need a tokenizer with a chat template"):
        prompt_token_ids(tiny_tokenizer, replaced, apply_chat_template=False)
    with pytest.raises(AlignkitError, match="conversational prompts need a tokenizer with a chat template"):
        reward_text(tiny_tokenizer, replaced, "5.", apply_chat_template=False)


def test_a_tokenizer_without_eos_or_any_pad_candidate_is_refused():
    tokenizer = build_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(AlignkitError, match="no eos token"):
        response_token_ids(tokenizer, "5.")
    tokenizer.unk_token = None
    with pytest.raises(AlignkitError, match="no pad, eos or unk token"):
        ensure_pad_token(tokenizer)


def test_a_template_that_does_not_render_the_prompt_as_a_prefix_is_refused():
    tokenizer = build_tokenizer()
    # the generation prompt says "Assistant:", the rendered reply "assistant:": the reply cannot be cut off the prompt
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    with pytest.raises(AlignkitError, match="does not render the prompt as a prefix"):
        reward_text(tokenizer, "hi", "5.")
