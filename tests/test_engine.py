"""The shared log-prob engine: exact against a naive full-logits computation, padding-side invariant."""

import math
import re

import pytest
import torch
from conftest import build_model

from alignkit.data.collate import (
    HOST_KEYS,
    build_batch,
    build_packed_batch,
    build_sequence_batch,
    pack_rows,
    scored_positions,
    to_device,
)
from alignkit.engine.logprobs import sequence_logps, supports_padding_free, token_logps

SEQUENCES = [[5, 6, 7, 8, 9, 10], [5, 6, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27, 28], [30, 31]]
STARTS = [3, 2, 5, 1]


def naive_logps(model, sequences, starts):
    """Independent reference: one unpadded sequence at a time, full logits, log_softmax."""
    out = []
    for ids, start in zip(sequences, starts):
        logprobs = model(torch.tensor([ids])).logits.float().log_softmax(-1)[0]
        out.append(sum(logprobs[p - 1, ids[p]] for p in range(start, len(ids))))
    return torch.stack(out)


LAYOUTS = {
    "right": lambda seqs, starts: build_sequence_batch(seqs, starts, 0, "right"),
    "left": lambda seqs, starts: build_sequence_batch(seqs, starts, 0, "left"),
    "packed": lambda seqs, starts: build_packed_batch(seqs, starts, 0),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_matches_naive_values_and_gradients(layout):
    model = build_model(64)
    batch = LAYOUTS[layout](SEQUENCES, STARTS)
    result = sequence_logps(model, batch, chunk_size=3)
    result.logps.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    expected = naive_logps(model, SEQUENCES, STARTS)
    expected.sum().backward()
    assert torch.allclose(result.logps, expected, atol=1e-5)
    assert result.token_counts.tolist() == [3, 2, 4, 1]
    for name, param in model.named_parameters():
        assert torch.allclose(grads[name], param.grad, atol=1e-5), name


def test_a_soft_capped_model_is_scored_with_its_cap():
    """Gemma-2 caps its logits (c * tanh(z / c)); the engine reads the cap from the model's config. Large
    head weights make the cap matter: uncapped, the sums would be about three times as negative."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=8)
    config = Gemma2Config(vocab_size=64, num_key_value_heads=2, final_logit_softcapping=2.0, **shape)
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    result = sequence_logps(model, LAYOUTS["packed"](SEQUENCES, STARTS), chunk_size=3).logps
    assert torch.allclose(result, naive_logps(model, SEQUENCES, STARTS), atol=1e-4)
    assert result.sum() > -60  # capped logits spread at most 4 nats; uncapped these sum below -160


def test_token_entropy_of_known_distributions():
    """Row 1: logits (0, ln 3) over two tokens, p = (1/4, 3/4), H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335;
    row 2: all logits 0, H = ln 2; row 3: capped at 1 (Gemma-2's rule) logits 1 * tanh(0), H = ln 2 too.
    Every chunk size gives every row."""
    from alignkit.engine.logprobs import token_entropy

    hidden = torch.tensor([[1.0], [0.0], [0.0]])
    weight = torch.tensor([[0.0], [math.log(3.0)]])
    expected = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2), math.log(2)]
    for chunk_size in (1, 2, 4):
        assert token_entropy(hidden, weight, chunk_size, 0.0).tolist() == pytest.approx(expected, abs=1e-6)
    capped = token_entropy(hidden, weight, 2, 0.5)[0].item()  # capped logits (0, 0.5 tanh(2 ln 3)) are closer
    p_high = 1 / (1 + math.exp(-0.5 * math.tanh(math.log(3.0) / 0.5)))
    assert capped == pytest.approx(-(p_high * math.log(p_high) + (1 - p_high) * math.log(1 - p_high)), abs=1e-6)
    assert token_entropy(hidden[:0], weight, 2, 0.0).shape == (0,)


def test_left_and_right_padding_give_identical_logps():
    model = build_model(64).eval()
    right = sequence_logps(model, build_sequence_batch(SEQUENCES, STARTS, 0, "right")).logps
    left = sequence_logps(model, build_sequence_batch(SEQUENCES, STARTS, 0, "left")).logps
    assert torch.allclose(right, left, atol=1e-5)
    # and the pad id is irrelevant: padding is never scored
    other_pad = sequence_logps(model, build_sequence_batch(SEQUENCES, STARTS, 63, "right")).logps
    assert torch.allclose(right, other_pad, atol=1e-5)


def test_pack_rows_first_fit_decreasing():
    # lengths 6, 4, 9, 2 into rows of width 9: [9], [6, 2], [4]
    assert pack_rows([6, 4, 9, 2], 9) == [[2], [0, 3], [1]]
    assert pack_rows([3, 3, 3], 9) == [[0, 1, 2]]


def test_packed_batch_layout_has_no_cross_sequence_padding():
    batch = build_packed_batch(SEQUENCES, STARTS, pad_id=99)
    assert "attention_mask" not in batch  # the block-diagonal mask comes from position_ids
    assert batch["input_ids"].shape == (3, 9)  # 21 tokens in 3 rows instead of 4 rows of 9
    assert batch["input_ids"][1].tolist() == [5, 6, 7, 8, 9, 10, 30, 31, 99]
    # positions restart for each sequence and for the trailing pad
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 0]
    assert batch["seq_index"][1].tolist() == [-1, -1, 0, 0, 0, -1, 3, -1, -1]
    assert batch["target_ids"][1, 2:5].tolist() == [8, 9, 10] and batch["target_ids"][1, 6].item() == 31
    assert batch["sequence_lengths"].tolist() == [6, 4, 9, 2]


def test_packed_and_padded_agree_on_a_pretrained_style_batch():
    model = build_model(64).eval()
    torch.manual_seed(3)
    seqs = [torch.randint(1, 64, (n,)).tolist() for n in (17, 5, 30, 12, 9, 3)]
    starts = [8, 2, 11, 6, 4, 1]
    packed = sequence_logps(model, build_batch(seqs, starts, 0, padding_free=True)).logps
    padded = sequence_logps(model, build_batch(seqs, starts, 0, padding_free=False)).logps
    assert torch.allclose(packed, padded, atol=1e-5)


def test_chunk_size_does_not_change_results():
    model = build_model(64).eval()
    batch = build_sequence_batch(SEQUENCES, STARTS, 0)
    values = [sequence_logps(model, batch, chunk_size=c).logps for c in (1, 4, 1024)]
    assert torch.allclose(values[0], values[1], atol=1e-6) and torch.allclose(values[0], values[2], atol=1e-6)


def test_token_logps_softcap_matches_autograd():
    """More rows than hidden features, as in any real batch (a loop bound read off the wrong dimension
    would leave rows out)."""
    torch.manual_seed(0)
    hidden = torch.randn(23, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    out = token_logps(hidden, weight, targets, chunk_size=2, softcap=5.0)
    grad_out = torch.randn(23)
    (out * grad_out).sum().backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = 5.0 * torch.tanh(hidden @ weight.T / 5.0)
    expected = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (expected * grad_out).sum().backward()
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(gh, hidden.grad, atol=1e-5) and torch.allclose(gw, weight.grad, atol=1e-5)


@pytest.mark.parametrize("softcap", [0.0, 5.0])
def test_token_logps_frozen_head_matches_autograd(softcap):
    """A frozen head (LoRA) takes the path that computes d logp/dh in the forward: same values and
    hidden-state gradients as autograd through the full log-softmax, for any chunking."""
    torch.manual_seed(1)
    hidden = torch.randn(23, 16, requires_grad=True)  # more rows than features, as in any real batch
    weight = torch.randn(50, 16)
    targets = torch.randint(0, 50, (23,))
    grad_out = torch.randn(23)
    logits = hidden @ weight.T
    logits = softcap * torch.tanh(logits / softcap) if softcap else logits
    expected = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (expected_grad,) = torch.autograd.grad((expected * grad_out).sum(), hidden)
    for chunk_size in (2, 7, 64):
        out = token_logps(hidden, weight, targets, chunk_size=chunk_size, softcap=softcap)
        (grad,) = torch.autograd.grad((out * grad_out).sum(), hidden)
        assert torch.allclose(out, expected, atol=1e-5)
        assert torch.allclose(grad, expected_grad, atol=1e-5)
    # one chunk by hand: d logp_0/dh_0 = W[t_0] - softmax(h_0 W^T) @ W (no soft-cap)
    if not softcap:
        (row,) = torch.autograd.grad(token_logps(hidden, weight, targets)[0], hidden)
        by_hand = weight[targets[0]] - (hidden[0] @ weight.T).softmax(-1) @ weight
        assert torch.allclose(row[0], by_hand.detach(), atol=1e-5) and row[1:].abs().max() == 0


def test_batch_marks_only_response_targets():
    batch = build_sequence_batch([[1, 2, 3, 4]], [2], pad_id=0, padding_side="left")
    # width 4, no padding: positions 1 and 2 predict tokens 3 and 4 (the response)
    assert batch["seq_index"].tolist() == [[-1, 0, 0, -1]]
    assert batch["target_ids"][0, 1:3].tolist() == [3, 4]
    with pytest.raises(ValueError):
        build_sequence_batch([[1, 2]], [0], pad_id=0)


def test_padding_free_support_is_detected(monkeypatch):
    model = build_model(64)
    assert supports_padding_free(model)
    # a model whose masks ignore position ids (as older attention code did) lets packed sequences mix
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    assert not supports_padding_free(model)


@pytest.mark.parametrize("device_type", ["cpu"])
def test_token_logps_backward_under_bf16_autocast_is_the_gradient_of_its_forward(device_type):
    """A trainable output layer whose logits reach about 20: under bf16 autocast the chunked function's
    gradients equal autograd of the same autocast expression (a backward that recomputes the logits in
    fp32 against the forward's bf16 log-sum-exp is off by several percent at such logits)."""
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(12, 16, generator=generator)
    weight = torch.randn(50, 16, generator=generator) * 1.3
    targets = torch.randint(0, 50, (12,), generator=generator)
    upstream = torch.randn(12, generator=generator)
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        chunked = token_logps(h1, w1, targets, chunk_size=5)
        logits = (h2 @ w2.T).float()
        assert logits.abs().max() > 15
        expected = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (chunked * upstream).sum().backward()
    (expected * upstream).sum().backward()
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=0)
    # bf16 products summed in another order: a few bf16 ulps; a mismatched backward is off by ~0.1 relative
    for ours, theirs in ((h1.grad, h2.grad), (w1.grad, w2.grad)):
        assert (ours - theirs).norm() / theirs.norm() < 1e-2


def test_every_layout_places_tokens_targets_and_last_tokens_where_they_are_read():
    """Hand-laid batches of two sequences, [5, 6, 7, 8] scored from token 2 and [9, 10] scored by a mask
    (its token 0 cannot be scored: no position predicts it): position p holds the target token p + 1, and
    ``last_token`` the flat index a reward head reads, in every layout."""
    sequences, scored, pad = [[5, 6, 7, 8], [9, 10]], [2, [True, True]], 0
    right = build_sequence_batch(sequences, scored, pad)
    assert right["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert right["target_ids"].tolist() == [[0, 7, 8, 0], [10, 0, 0, 0]]
    assert right["seq_index"].tolist() == [[-1, 0, 0, -1], [1, -1, -1, -1]]
    assert right["last_token"].tolist() == [3, 5] and right["sequence_lengths"].tolist() == [4, 2]
    left = build_sequence_batch(sequences, scored, pad, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7, 8], [0, 0, 9, 10]]
    assert left["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert left["target_ids"][1].tolist() == [0, 0, 10, 0] and left["last_token"].tolist() == [3, 7]
    rows = build_packed_batch(sequences, scored, pad)  # 4 + 2 tokens do not fit a row of 4: two rows
    assert rows["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]] and "attention_mask" not in rows
    assert rows["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]  # the padding is its own sequence
    assert rows["last_token"].tolist() == [3, 5]
    one_row = build_packed_batch(sequences, scored, pad, one_row=True)
    assert one_row["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]] and one_row["last_token"].tolist() == [3, 5]
    assert one_row["target_ids"].tolist() == [[0, 7, 8, 0, 10, 0]]
    assert one_row["segments"].tolist() == [[0, 4], [4, 2]]
    with pytest.raises(ValueError, match="sequence 1: loss mask has 3 entries for 2 tokens"):
        build_sequence_batch(sequences, [2, [False, True, True]], pad)
    with pytest.raises(ValueError, match="sequence 1: no scored tokens"):
        build_sequence_batch(sequences, [2, [True, False]], pad)


def test_to_device_lists_scored_positions_on_the_host_and_leaves_the_layout_there():
    """The scored positions are found before the move (on a GPU, after it, they would cost a sync per
    forward) and the segment layout stays on the host; every other tensor moves (here to ``meta``)."""
    batch = build_packed_batch([[5, 6, 7, 8], [9, 10]], [2, 1], 0, one_row=True)
    positions, targets, owner = scored_positions(batch)
    assert (positions.tolist(), targets.tolist(), owner.tolist()) == ([1, 2, 4], [7, 8, 10], [0, 0, 1])
    moved = to_device(batch, torch.device("meta"))
    assert HOST_KEYS == {"segments"} and moved["segments"].device.type == "cpu"
    assert {k for k, v in moved.items() if v.device.type == "cpu"} == {"segments"}
    assert {k: moved[k].shape for k in ("score_positions", "score_targets", "score_owner")} == dict.fromkeys(
        ("score_positions", "score_targets", "score_owner"), (3,)
    )


def test_a_sequence_with_nothing_to_score_is_refused_by_name():
    assert build_batch([[5, 6, 7]], [2], pad_id=0)["target_ids"].tolist() == [[0, 7, 0]]  # position 1 predicts 7
    for scored, why in ((3, "be non-empty (start=3, length=3)"), (0, "start=0"), ([1, 0, 0], "no scored tokens")):
        with pytest.raises(ValueError, match=re.escape("sequence 1: ") + ".*" + re.escape(why)):
            build_batch([[5, 6, 7], [5, 6, 7]], [2, scored], pad_id=0)
    with pytest.raises(ValueError, match="sequence 0: loss mask has 2 entries for 3 tokens"):
        build_batch([[5, 6, 7]], [[0, 1]], pad_id=0)
