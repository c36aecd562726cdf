"""The shared log-prob engine: exact against a naive full-logits computation, padding-side invariant."""
import pytest
import torch

from alignkit.data.collate import build_sequence_batch
from alignkit.engine.logprobs import sequence_logps, token_logps

from conftest import build_model

SEQUENCES = [[5, 6, 7, 8, 9, 10], [5, 6, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27, 28], [30, 31]]
STARTS = [3, 2, 5, 1]


def naive_logps(model, sequences, starts):
    """Independent reference: one unpadded sequence at a time, full logits, log_softmax."""
    out = []
    for ids, start in zip(sequences, starts):
        logprobs = model(torch.tensor([ids])).logits.float().log_softmax(-1)[0]
        out.append(sum(logprobs[p - 1, ids[p]] for p in range(start, len(ids))))
    return torch.stack(out)


@pytest.mark.parametrize("side", ["right", "left"])
def test_matches_naive_values_and_gradients(side):
    model = build_model(64)
    batch = build_sequence_batch(SEQUENCES, STARTS, pad_id=0, padding_side=side)
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


def test_left_and_right_padding_give_identical_logps():
    model = build_model(64).eval()
    right = sequence_logps(model, build_sequence_batch(SEQUENCES, STARTS, 0, "right")).logps
    left = sequence_logps(model, build_sequence_batch(SEQUENCES, STARTS, 0, "left")).logps
    assert torch.allclose(right, left, atol=1e-5)
    # and the pad id is irrelevant: padding is never scored
    other_pad = sequence_logps(model, build_sequence_batch(SEQUENCES, STARTS, 63, "right")).logps
    assert torch.allclose(right, other_pad, atol=1e-5)


def test_chunk_size_does_not_change_results():
    model = build_model(64).eval()
    batch = build_sequence_batch(SEQUENCES, STARTS, 0)
    values = [sequence_logps(model, batch, chunk_size=c).logps for c in (1, 4, 1024)]
    assert torch.allclose(values[0], values[1], atol=1e-6) and torch.allclose(values[0], values[2], atol=1e-6)


def test_token_logps_softcap_matches_autograd():
    torch.manual_seed(0)
    hidden = torch.randn(7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (7,))
    out = token_logps(hidden, weight, targets, chunk_size=2, softcap=5.0)
    grad_out = torch.randn(7)
    (out * grad_out).sum().backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = 5.0 * torch.tanh(hidden @ weight.T / 5.0)
    expected = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (expected * grad_out).sum().backward()
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(gh, hidden.grad, atol=1e-5) and torch.allclose(gw, weight.grad, atol=1e-5)


def test_batch_marks_only_response_targets():
    batch = build_sequence_batch([[1, 2, 3, 4]], [2], pad_id=0, padding_side="left")
    # width 4, no padding: positions 1 and 2 predict tokens 3 and 4 (the response)
    assert batch["seq_index"].tolist() == [[-1, 0, 0, -1]]
    assert batch["target_ids"][0, 1:3].tolist() == [3, 4]
    with pytest.raises(ValueError):
        build_sequence_batch([[1, 2]], [0], pad_id=0)
