"""Segment attention: a batch in one row of exactly its real tokens gives the log-probs and gradients of the
naive per-sequence computation (fp32), shared prompts or not, with LoRA and gradient checkpointing, for KTO
and reward models too; a model that cannot run it keeps its attention, with a notice."""

import subprocess
import sys

import pytest
import torch
from conftest import build_model, build_reward_model
from test_engine import naive_logps
from test_prefix_sharing import PAIRS, naive_pairs

from alignkit.data.collate import PreferenceCollator, build_packed_batch
from alignkit.data.kto import KTOCollator
from alignkit.data.prefix_sharing import build_shared_batch
from alignkit.data.tokenize import TokenizedPair
from alignkit.engine.logprobs import sequence_logps, supports_segments
from alignkit.engine.scores import sequence_scores
from alignkit.models.segment_attention import SEGMENT_ATTENTION, enable_segment_attention, set_attention
from alignkit.train.session import fused_adamw_fits

ITEMS = [{"pair": TokenizedPair(p, c, r)} for p, c, r in PAIRS]


def segment_model(**kwargs):
    model = build_model(64, **kwargs)
    assert enable_segment_attention(model, supports_segments)
    return model


def test_one_row_layout_has_no_padding_and_names_its_segments():
    batch = build_shared_batch([(p, [c, r]) for p, c, r in PAIRS], pad_id=0, one_row=True)
    assert batch["input_ids"].shape == (1, 9 + 8 + 10)  # every block's tokens, nothing else
    assert "attention_mask" not in batch
    assert batch["segments"].tolist() == [[0, 3, 4, 2], [9, 2, 1, 5], [17, 5, 2, 3]]
    assert batch["position_ids"][0, 9:17].tolist() == [0, 1, 2, 2, 3, 4, 5, 6]  # rejected continues the prompt
    packed = build_packed_batch([[1, 2, 3], [4, 5], [6, 7, 8, 9]], [1, 1, 1], pad_id=0, one_row=True)
    assert packed["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert packed["segments"].tolist() == [[0, 3], [3, 2], [5, 4]]


@pytest.mark.parametrize("prefix_sharing", [True, False])
def test_values_and_gradients_match_the_naive_computation(prefix_sharing):
    model = segment_model()
    batch = PreferenceCollator(0, prefix_sharing=prefix_sharing, one_row=True)(ITEMS)
    assert batch["input_ids"].shape[0] == 1 and "segments" in batch
    result = sequence_logps(model, batch, chunk_size=3)
    (result.logps * torch.arange(1.0, 7.0)).sum().backward()  # distinct weights: a swapped sequence would show
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    expected = naive_logps(model, *naive_pairs())
    (expected * torch.arange(1.0, 7.0)).sum().backward()
    assert torch.allclose(result.logps, expected, atol=1e-5)
    for name, param in model.named_parameters():
        assert torch.allclose(grads[name], param.grad, atol=1e-5), name


def test_with_lora_and_gradient_checkpointing():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        segment_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    one_row = sequence_logps(model, PreferenceCollator(0, prefix_sharing=True, one_row=True)(ITEMS))
    one_row.logps.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    padded = sequence_logps(model, PreferenceCollator(0, padding_free=False)(ITEMS))
    padded.logps.sum().backward()
    assert torch.allclose(one_row.logps, padded.logps, atol=1e-5)
    assert grads and all(
        torch.allclose(grads[n], p.grad, atol=1e-5) for n, p in model.named_parameters() if p.requires_grad
    )


def test_kto_and_reward_paths():
    model = segment_model().eval()
    items = [{"prompt": p, "completion": c, "kl_completion": r, "desirable": True} for p, c, r in PAIRS]
    one_row = sequence_logps(model, KTOCollator(0, prefix_sharing=True, one_row=True)(items)).logps
    assert torch.allclose(one_row, sequence_logps(model, KTOCollator(0, padding_free=False)(items)).logps, atol=1e-5)

    scorer = build_reward_model(64)
    assert enable_segment_attention(scorer, supports_segments)
    shared = sequence_scores(scorer, PreferenceCollator(0, prefix_sharing=True, one_row=True)(ITEMS))
    set_attention(scorer, "sdpa")
    alone = torch.cat([scorer(torch.tensor([ids])).logits[:, 0] for ids in naive_pairs()[0]])
    assert torch.allclose(shared, alone, atol=1e-5)


def test_without_segments_it_is_sdpa():
    model = build_model(64).eval()
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    before = model(ids, attention_mask=mask).logits
    set_attention(model, SEGMENT_ATTENTION)
    assert torch.equal(model(ids, attention_mask=mask).logits, before)  # padded batches and generation unchanged


def test_models_that_cannot_run_it_keep_their_attention(capsys):
    eager = build_model(64)
    set_attention(eager, "eager")
    assert not enable_segment_attention(eager, supports_segments)
    assert eager.config._attn_implementation == "eager"
    windowed = build_model(64)
    windowed.config.sliding_window = 128
    assert not enable_segment_attention(windowed, supports_segments, max_length=256)  # could outgrow the window
    assert enable_segment_attention(windowed, supports_segments, max_length=128)
    model = build_model(64)
    assert not enable_segment_attention(model, lambda m: False)  # a model whose layers drop the segments
    assert model.config._attn_implementation == "sdpa" and "do not follow one-row segments" in capsys.readouterr().err
    with pytest.raises(ValueError, match="segment attention"):  # never silently attend across the row
        sequence_logps(model, PreferenceCollator(0, prefix_sharing=True, one_row=True)(ITEMS))


def test_fused_adamw_only_where_it_fits():
    params = list(build_model(64).parameters())
    assert fused_adamw_fits(params, sharded=False)
    assert not fused_adamw_fits(params, sharded=True)  # DeepSpeed and FSDP keep their own optimizer handling
    assert not fused_adamw_fits([], sharded=False)


def test_training_does_not_import_datasets():
    """datasets is only needed for save_to_disk folders and hub ids; importing it costs every run 80 MB."""
    code = "import sys, alignkit.cli, alignkit.train.dpo; print('datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
