"""Prefix sharing: the prompt computed once per pair gives the log-probs and gradients of the naive
per-sequence computation (fp32), in every layout and for every path that scores two responses."""

import pytest
import torch
from conftest import build_model, build_reward_model
from test_engine import naive_logps

from alignkit.data.collate import PreferenceCollator
from alignkit.data.kto import KTOCollator
from alignkit.data.prefix_sharing import build_shared_batch, shared_prefix
from alignkit.data.tokenize import TokenizedPair
from alignkit.engine.logprobs import sequence_logps, supports_prefix_sharing
from alignkit.engine.scores import sequence_scores

# (prompt, chosen, rejected): prompts and responses of different lengths, one one-token response
PAIRS = [
    ([5, 6, 7], [8, 9, 10, 11], [12, 13]),
    ([20, 21], [22], [23, 24, 25, 26, 27]),
    ([30, 31, 32, 33, 34], [35, 36], [37, 38, 39]),
]


def naive_pairs():
    sequences = [p + c for p, c, _ in PAIRS] + [p + r for p, _, r in PAIRS]
    starts = [len(p) for p, _, _ in PAIRS] * 2
    return sequences, starts


def test_block_layout_positions_mask_and_targets():
    batch = build_shared_batch([([5, 6], [[7, 8], [9]])], pad_id=0, padding_free=False)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2]]  # the rejected response continues from the prompt
    mask = batch["attention_mask"][0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],
    ]  # the rejected token sees the prompt and itself, never chosen
    # position 1 (the prompt's last token) predicts the first token of both responses
    assert batch["score_positions"].tolist() == [1, 2, 1] and batch["score_targets"].tolist() == [7, 8, 9]
    assert batch["score_owner"].tolist() == [0, 0, 1]
    assert batch["sequence_lengths"].tolist() == [4, 3] and batch["last_token"].tolist() == [3, 4]
    # a block needs a prompt and every slot's answer: anything else is refused, naming the item
    for group in [([], [[7], [9]]), ([5, 6], [[7, 8], []]), ([5, 6], [[7, 8]])]:
        with pytest.raises(ValueError, match="item 1: a shared block needs a non-empty prefix and 2 non-empty"):
            build_shared_batch([([5], [[7], [8]]), group], pad_id=0)


@pytest.mark.parametrize("padding_free", [True, False])
def test_values_and_gradients_match_the_naive_computation(padding_free):
    model = build_model(64)
    batch = build_shared_batch([(p, [c, r]) for p, c, r in PAIRS], pad_id=0, padding_free=padding_free)
    result = sequence_logps(model, batch, chunk_size=3)
    (result.logps * torch.arange(1.0, 7.0)).sum().backward()  # distinct weights: a swapped sequence would show
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sequences, starts = naive_pairs()
    expected = naive_logps(model, sequences, starts)
    (expected * torch.arange(1.0, 7.0)).sum().backward()
    assert torch.allclose(result.logps, expected, atol=1e-5)
    assert result.token_counts.tolist() == [4, 1, 2, 2, 5, 3]
    for name, param in model.named_parameters():
        assert torch.allclose(grads[name], param.grad, atol=1e-5), name
    if padding_free:  # blocks of 9, 8 and 10 tokens: packed into rows no wider than the longest block
        assert batch["input_ids"].shape == (3, 10)


def test_eager_attention_gets_the_additive_mask():
    model = build_model(64)
    model.config._attn_implementation = "eager"
    model.model.config._attn_implementation = "eager"
    batch = build_shared_batch([(p, [c, r]) for p, c, r in PAIRS], pad_id=0)
    assert torch.allclose(sequence_logps(model, batch).logps, naive_logps(model, *naive_pairs()), atol=1e-5)


def test_with_lora_and_gradient_checkpointing():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        build_model(64), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    batch = PreferenceCollator(0, prefix_sharing=True)([{"pair": TokenizedPair(p, c, r)} for p, c, r in PAIRS])
    assert "score_positions" in batch
    shared = sequence_logps(model, batch)
    shared.logps.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    plain = sequence_logps(
        model, PreferenceCollator(0, prefix_sharing=False)([{"pair": TokenizedPair(p, c, r)} for p, c, r in PAIRS])
    )
    plain.logps.sum().backward()
    assert torch.allclose(shared.logps, plain.logps, atol=1e-5)
    assert grads and all(
        torch.allclose(grads[n], p.grad, atol=1e-5) for n, p in model.named_parameters() if p.requires_grad
    )


def test_kto_completion_and_kl_completion_share_the_prompt():
    items = [{"prompt": p, "completion": c, "kl_completion": r, "desirable": True} for p, c, r in PAIRS]
    model = build_model(64).eval()
    shared = KTOCollator(0, prefix_sharing=True)(items)
    plain = KTOCollator(0, prefix_sharing=False)(items)
    assert "score_positions" in shared and "score_positions" not in plain
    assert torch.allclose(sequence_logps(model, shared).logps, sequence_logps(model, plain).logps, atol=1e-5)


def test_reward_scores_read_each_response_end():
    model = build_reward_model(64)
    items = [{"pair": TokenizedPair(p, c, r)} for p, c, r in PAIRS]
    shared = sequence_scores(model, PreferenceCollator(0, prefix_sharing=True)(items))
    alone = torch.cat([model(torch.tensor([ids])).logits[:, 0] for ids in naive_pairs()[0]])
    assert torch.allclose(shared, alone, atol=1e-5)


def test_nothing_to_share_keeps_the_plain_layout():
    assert shared_prefix([([1, 2, 3], 1)]) is None  # one sequence
    assert shared_prefix([([1, 2, 3], 2), ([1, 9, 3], 2)]) is None  # different prompts
    assert shared_prefix([([1, 2, 3], [0, 1, 1]), ([1, 2, 4], [0, 1, 1])]) is None  # token masks
    assert shared_prefix([([1, 2, 3], 1), ([1, 4], 1)]) == ([1], [[2, 3], [4]])


def test_support_is_detected():
    model = build_model(64)
    assert supports_prefix_sharing(model)
    model.config._attn_implementation = "flash_attention_2"  # a kernel that takes no 4-D mask (not installed here)
    model.model.config._attn_implementation = "flash_attention_2"
    assert not supports_prefix_sharing(model)
