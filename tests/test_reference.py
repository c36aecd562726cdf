"""The reference model itself: under LoRA the policy with adapters off (no second copy, dropout off, the
policy's train mode kept), under full fine-tuning a frozen copy the optimizer cannot move, and after
precomputing nothing live at all."""

import pytest
import torch
from conftest import build_model

from alignkit.data.collate import build_sequence_batch
from alignkit.engine.logprobs import LogProbModel, sequence_logps
from alignkit.engine.reference import Reference

SEQUENCES = [[5, 6, 7, 8, 9, 10], [5, 6, 11, 12], [20, 21, 22, 23, 24]]
STARTS = [3, 2, 2]


def batch():
    return build_sequence_batch(SEQUENCES, STARTS, 0, "right")


def dropout_model(seed: int = 0):
    """The tiny Llama with heavy attention dropout, in train mode: every forward differs unless dropout is off."""
    model = build_model(64, seed=seed)
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    return model.train()


def test_lora_reference_is_the_base_model_in_eval_mode_with_no_copy():
    from peft import LoraConfig, get_peft_model

    base_values = sequence_logps(dropout_model().eval(), batch()).logps
    lm = get_peft_model(dropout_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.5)).train()
    with torch.no_grad():  # adapters that change the output: off, they must not count
        for name, param in lm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=1.0)
    policy = LogProbModel(lm)
    reference = Reference(policy, use_adapter=True)

    assert reference.frozen is None  # the policy itself serves: no second model in memory
    first, second = reference(batch()), reference(batch())
    assert torch.equal(first, second)  # dropout off in the reference forward
    assert torch.allclose(first, base_values, atol=1e-5)
    assert not torch.allclose(policy.eval()(batch()).logps, base_values, atol=1e-2)  # the adapters matter
    lm.train()
    reference(batch())
    assert lm.training  # the policy goes back to training mode
    assert not first.requires_grad


def test_full_reference_is_a_frozen_eval_copy_the_policy_cannot_move():
    policy = LogProbModel(dropout_model())
    reference = Reference(policy, use_adapter=False)
    before = reference(batch())
    assert torch.allclose(before, sequence_logps(dropout_model().eval(), batch()).logps, atol=1e-6)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(0.1)
    assert torch.equal(reference(batch()), before)
    assert not any(p.requires_grad for p in reference.frozen.parameters())


def test_precompute_only_makes_no_copy_and_a_released_reference_refuses_live_calls():
    policy = LogProbModel(dropout_model())
    reference = Reference(policy, use_adapter=False, precompute_only=True)
    assert reference.frozen is None
    assert torch.allclose(reference(batch()), sequence_logps(dropout_model().eval(), batch()).logps, atol=1e-6)

    full = Reference(LogProbModel(dropout_model()), use_adapter=False)
    full.release()
    assert full.frozen is None  # the copy's memory is given back
    carried = dict(batch(), ref_logps=torch.tensor([-1.0, -2.0, -3.0]))
    assert full(carried).tolist() == [-1.0, -2.0, -3.0]
    with pytest.raises(RuntimeError, match="precomputed"):
        full(batch())


class _Collate:
    """Two slots per item (as chosen and rejected): the batch lists each slot's values, slot-major."""

    @staticmethod
    def signature(item):
        return item["v"]

    def __call__(self, items):
        values = torch.tensor([float(item["v"]) for item in items])
        return {"values": torch.cat([values, values + 100.0])}


def test_a_sharded_pass_computes_each_batch_once_and_every_process_gets_every_value(tmp_path, monkeypatch):
    """9 items in batches of 2 over 2 processes: batches 0, 2 and 4 on rank 0, 1 and 3 on rank 1, which then
    repeats batch 0 for nothing (both run 3 forwards); the gathered values are every item's, in order."""
    from alignkit.engine import reference as module

    monkeypatch.setattr(module, "collate_to", lambda collate, items, device: collate(items))
    seen = {0: [], 1: [], "later": []}

    def fake_reference(rank):
        def forward(batch):
            seen[rank].append(batch["values"][: len(batch["values"]) // 2].tolist())
            return -batch["values"]

        return forward

    def items():
        return [{"v": i} for i in range(9)]

    sent = {}

    def rank1_gather(local):
        sent["local"] = local
        return torch.cat([local, local])

    module._reference_pass(fake_reference(1), items(), _Collate(), 2, "cpu", False, (1, 2), rank1_gather)
    got = items()
    computed = module.precompute_reference(
        fake_reference(0),
        got,
        _Collate(),
        2,
        tmp_path,
        "fp",
        "cpu",
        False,
        (0, 2),
        lambda local: torch.cat([local, sent["local"]]),
    )
    assert seen == {0: [[0.0, 1.0], [4.0, 5.0], [8.0]], 1: [[2.0, 3.0], [6.0, 7.0], [0.0, 1.0]], "later": []}
    assert computed == 9
    assert [item["ref_logps"] for item in got] == [[-i, -i - 100.0] for i in range(9)]

    again = items()  # the cache, keyed by the items' signatures: no forward at all
    assert module.precompute_reference(fake_reference("later"), again, _Collate(), 2, tmp_path, "fp", "cpu", False) == 0
    assert again == got and seen["later"] == []
    other = [{"v": i + 1} for i in range(9)]  # other tokens miss the cache
    assert module.precompute_reference(fake_reference("later"), other, _Collate(), 2, tmp_path, "fp", "cpu", False) == 9
    assert len(seen["later"]) == 5
