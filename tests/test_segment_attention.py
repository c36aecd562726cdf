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


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_with_lora_and_gradient_checkpointing_against_the_naive_autograd(precision):
    """LoRA takes the frozen-output-layer path of the log-prob engine (its gradient computed in the forward):
    values and adapter gradients against autograd through each sequence's full log-softmax, never against
    another layout of the same engine; under bf16 autocast both sides run in it."""
    from contextlib import nullcontext

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        segment_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    weights = torch.arange(1.0, 7.0)  # distinct weights: a swapped sequence would show
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with autocast:
        one_row = sequence_logps(model, PreferenceCollator(0, prefix_sharing=True, one_row=True)(ITEMS))
    (one_row.logps * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    with autocast:
        expected = naive_logps(model, *naive_pairs())
    (expected * weights).sum().backward()
    value_tol, grad_tol = (1e-5, 1e-5) if precision == "fp32" else (1e-3, 2e-2)
    torch.testing.assert_close(one_row.logps, expected, atol=value_tol, rtol=0)
    assert len(grads) == 8  # lora_A and lora_B of q_proj and v_proj in both layers
    for name, param in model.named_parameters():
        if param.requires_grad:
            error = (grads[name] - param.grad).norm() / param.grad.norm()
            assert error < grad_tol, (name, float(error))


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


def many_blocks_batch():
    """A one-row batch of many sequences: shared-prefix blocks (a prompt, two answers), plain sequences,
    wider than one 128-token tile so the block mask has skipped, full and partial tiles."""
    generator = torch.Generator().manual_seed(5)

    def ids(n):
        return torch.randint(3, 64, (n,), generator=generator).tolist()

    blocks = [
        (ids(40), [ids(30), ids(25)]),
        (ids(7), [ids(3), ids(60)]),
        (ids(90), [ids(12), ids(40)]),
        (ids(5), [ids(9), ids(2)]),
    ]
    shared = build_shared_batch(blocks, pad_id=0, one_row=True)
    plain = [ids(50), ids(33)]
    width = shared["input_ids"].shape[1]
    starts = [width, width + len(plain[0])]
    return (
        {
            "input_ids": torch.cat([shared["input_ids"], torch.tensor([plain[0] + plain[1]])], dim=1),
            "position_ids": torch.cat(
                [shared["position_ids"], torch.tensor([list(range(50)) + list(range(33))])], dim=1
            ),
            "segments": torch.cat(
                [shared["segments"], torch.tensor([[s, len(p), 0, 0] for s, p in zip(starts, plain)])]
            ),
        },
        blocks,
        plain,
    )


def each_sequence_alone(backbone, blocks, plain) -> torch.Tensor:
    """The hidden states a one-row batch of ``many_blocks_batch`` must have: every sequence run alone (a
    block's later answers without their prompt's positions), in the row's order."""
    expected = []
    for prefix, continuations in blocks:
        for j, continuation in enumerate(continuations):
            alone = backbone(input_ids=torch.tensor([prefix + continuation])).last_hidden_state[0]
            expected.append(alone if j == 0 else alone[len(prefix) :])
    expected += [backbone(input_ids=torch.tensor([p])).last_hidden_state[0] for p in plain]
    return torch.cat(expected)


@torch.no_grad()
def test_flex_kernel_is_one_attention_call_per_layer_and_matches_each_sequence_alone(monkeypatch):
    """The GPU path (forced here: FlexAttention has no backward on CPU, so a CPU forward is what can be
    checked): one FlexAttention call and no SDPA call per layer, whatever the number of segments, and the
    hidden states of every sequence alone."""
    from alignkit.engine.logprobs import backbone_of, last_hidden_states
    from alignkit.models import flex_segments, segment_attention

    model = segment_model().eval()
    backbone = backbone_of(model)
    batch, blocks, plain = many_blocks_batch()
    calls = {"flex": 0, "sdpa": 0}
    real_flex, real_sdpa = flex_segments.flex_attention, torch.nn.functional.scaled_dot_product_attention

    def counting_flex(*args, **kwargs):
        calls["flex"] += 1
        return real_flex(*args, **kwargs)

    def counting_sdpa(*args, **kwargs):
        calls["sdpa"] += 1
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(flex_segments, "flex_attention", counting_flex)
    monkeypatch.setattr(segment_attention.F, "scaled_dot_product_attention", counting_sdpa)
    with segment_attention.forced_kernel("flex"):
        hidden = last_hidden_states(backbone, batch)[0]
    layers = model.config.num_hidden_layers
    assert calls == {"flex": layers, "sdpa": 0}
    assert len(batch["segments"]) + sum(len(c) - 1 for _, c in blocks) == 10  # ten attention spans in the row
    monkeypatch.setattr(flex_segments, "flex_attention", real_flex)
    monkeypatch.setattr(segment_attention.F, "scaled_dot_product_attention", real_sdpa)
    torch.testing.assert_close(hidden, each_sequence_alone(backbone, blocks, plain), atol=1e-5, rtol=1e-5)
    with segment_attention.forced_kernel("loop"):  # the CPU path, the same values
        torch.testing.assert_close(last_hidden_states(backbone, batch)[0], hidden, atol=1e-5, rtol=1e-5)
    assert flex_segments.TILE == 128 and batch["input_ids"].shape[1] > 2 * flex_segments.TILE


def reference_varlen(calls: list):
    """FlashAttention-2's documented varlen semantics, on a CPU: query span ``i`` (``cu_q``) over key span
    ``i`` (``cu_k``), causal aligned to the bottom right (query ``j`` of ``q`` sees keys up to ``k - q + j``);
    its contract checked on the way (int32 boundaries, the longest spans, ``[tokens, heads, dim]``)."""
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def run(query, key, value, cu_q, cu_k, max_q, max_k, scale):
        calls.append(len(cu_q) - 1)
        assert cu_q.dtype == cu_k.dtype == torch.int32 and query.is_contiguous() and key.is_contiguous()
        assert query.dtype == key.dtype == value.dtype  # FlashAttention takes one dtype
        assert (max_q, max_k) == (int(cu_q.diff().max()), int(cu_k.diff().max()))
        assert int(cu_q[-1]) == query.shape[0] and int(cu_k[-1]) == key.shape[0]
        out = []
        for i in range(len(cu_q) - 1):
            q, k, v = (t[c[i] : c[i + 1]].transpose(0, 1) for t, c in ((query, cu_q), (key, cu_k), (value, cu_k)))
            mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).tril(k.shape[1] - q.shape[1])
            gqa = q.shape[0] != k.shape[0]
            out.append(real_sdpa(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa).transpose(0, 1))
        return torch.cat(out)

    return run


def test_varlen_spans_of_a_row_worked_by_hand():
    from alignkit.models.varlen_segments import build_layout, spans

    # a block: prompt of 3, answers of 2 and 4; then a plain sequence of 5 (a block with no continuations)
    blocks = [(0, 3, [2, 4]), (9, 5, [])]
    q_lengths, k_lengths, index = spans(blocks, 14)
    assert (q_lengths, k_lengths) == ([5, 4, 5], [5, 7, 5])  # the second answer's keys: prompt + itself
    assert index == [0, 1, 2, 3, 4] + [0, 1, 2, 5, 6, 7, 8] + [9, 10, 11, 12, 13]
    layout = build_layout(blocks, 14, "cpu")
    assert layout.cu_q.tolist() == [0, 5, 9, 14] and layout.cu_k.tolist() == [0, 5, 12, 17]
    assert (layout.max_q, layout.max_k) == (5, 7)
    assert spans([(0, 4, []), (4, 2, [3])], 9)[2] is None  # plain packing: the keys are the row itself
    with pytest.raises(ValueError, match="cover 9 tokens of a row of 10"):
        spans([(0, 4, []), (4, 2, [3])], 10)
    with pytest.raises(ValueError, match="a block starts at 5, expected 4"):
        spans([(0, 4, []), (5, 2, [3])], 10)


def test_varlen_kernel_is_one_call_per_layer_with_each_sequences_values_and_gradients(monkeypatch):
    """The varlen path end to end on a CPU, the kernel replaced by FlashAttention's semantics
    (:func:`reference_varlen`): one call per layer and no SDPA call from segment attention, the hidden
    states of every sequence alone, and the per-segment kernel's gradients (the key gather's backward)."""
    from alignkit.engine.logprobs import backbone_of, last_hidden_states
    from alignkit.models import segment_attention, varlen_segments

    calls = []
    monkeypatch.setattr(varlen_segments, "_KERNEL", [reference_varlen(calls)])
    model = segment_model()
    backbone = backbone_of(model)
    batch, blocks, plain = many_blocks_batch()
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    with monkeypatch.context() as patch:
        patch.setattr(segment_attention, "_attend", lambda *a: pytest.fail("segment attention called SDPA"))
        with segment_attention.forced_kernel("varlen"):
            hidden = last_hidden_states(backbone, batch)[0]
    assert calls == [10] * model.config.num_hidden_layers  # ten spans in one call per layer
    with torch.no_grad():
        expected = each_sequence_alone(backbone, blocks, plain)
    torch.testing.assert_close(hidden, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(1))
    (hidden * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in backbone.named_parameters()}
    backbone.zero_grad()
    assert torch.nn.functional.scaled_dot_product_attention is real_sdpa
    with segment_attention.forced_kernel("loop"):
        (last_hidden_states(backbone, batch)[0] * weights).sum().backward()
    for name, param in backbone.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_kernel_follows_the_device_precision_and_dropout(monkeypatch):
    from types import SimpleNamespace

    from alignkit.models import segment_attention, varlen_segments
    from alignkit.models.segment_attention import forced_kernel, kernel_for

    def query(device, dtype=torch.bfloat16, head_dim=64):
        return SimpleNamespace(device=torch.device(device), dtype=dtype, shape=(1, 8, 100, head_dim))

    monkeypatch.delenv(segment_attention.KERNEL_VARIABLE, raising=False)
    monkeypatch.setattr(varlen_segments, "_KERNEL", [None])  # no flash-attn, a torch without varlen_attn
    assert kernel_for(query("cuda"), 0.0) == "flex"
    monkeypatch.setattr(varlen_segments, "_KERNEL", [reference_varlen([])])
    monkeypatch.setattr(varlen_segments, "_ampere_or_later", lambda index: False)  # a T4 or V100
    assert kernel_for(query("cuda"), 0.0) == "flex"
    monkeypatch.setattr(varlen_segments, "_ampere_or_later", lambda index: True)
    assert kernel_for(query("cuda"), 0.0) == "varlen"
    assert kernel_for(query("cuda", torch.float32), 0.0) == "flex"  # FlashAttention takes fp16/bf16 only
    assert kernel_for(query("cuda", head_dim=512), 0.0) == kernel_for(query("cuda", head_dim=60), 0.0) == "flex"
    assert kernel_for(query("cpu"), 0.0) == "loop"
    assert kernel_for(query("cuda"), 0.1) == "loop"  # neither one-call kernel applies attention dropout
    with forced_kernel("flex"):
        assert kernel_for(query("cpu"), 0.1) == "flex"
    monkeypatch.setenv(segment_attention.KERNEL_VARIABLE, "Flex")
    assert kernel_for(query("cuda"), 0.0) == "flex"
    monkeypatch.setenv(segment_attention.KERNEL_VARIABLE, "varlen")
    with pytest.raises(RuntimeError, match=r"ALIGNKIT_SEGMENT_KERNEL=varlen, but .* here \(cpu, torch.bfloat16"):
        kernel_for(query("cpu"), 0.0)
    monkeypatch.setenv(segment_attention.KERNEL_VARIABLE, "flash")
    with pytest.raises(ValueError, match="'flash': expected auto or one of loop, flex, varlen"):
        kernel_for(query("cuda"), 0.0)


def test_the_support_check_runs_the_kernels_a_run_may_pick_on_the_models_device(monkeypatch):
    """A CPU-only run only ever runs the loop, so only the loop is checked there (eager FlexAttention took
    seconds of every run's start); with a GPU present a model loaded on the CPU trains there, so
    FlexAttention is checked too; a requested kernel always is; on CUDA every kernel it has."""
    from alignkit.models import segment_attention, varlen_segments
    from alignkit.models.segment_attention import kernels_to_check

    if segment_attention.flex_segments.flex_attention is None:
        pytest.skip("this torch has no FlexAttention")
    monkeypatch.delenv(segment_attention.KERNEL_VARIABLE, raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kernels_to_check(cpu) == ("loop",)
    monkeypatch.setenv(segment_attention.KERNEL_VARIABLE, "flex")
    assert kernels_to_check(cpu) == ("loop", "flex")
    monkeypatch.setenv(segment_attention.KERNEL_VARIABLE, "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert kernels_to_check(cpu) == ("loop", "flex")
    monkeypatch.setattr(varlen_segments, "_KERNEL", [reference_varlen([])])
    assert kernels_to_check(cuda) == ("loop", "flex", "varlen")


def _attention_that(drop: str):
    """LlamaAttention.forward that loses the layout on its way to the kernel: the ``segments`` keyword
    (a layer that does not pass its keywords on) or a 4-D mask (a wrapper that only takes 2-D ones)."""
    from transformers.models.llama.modeling_llama import LlamaAttention

    real = LlamaAttention.forward

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        if drop == "segments":
            kwargs.pop("segments", None)
        elif attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return real(self, hidden_states, position_embeddings, attention_mask, **kwargs)

    return forward


@pytest.mark.parametrize("drop", ["segments", "4-D mask"])
def test_a_model_whose_attention_drops_the_layout_falls_back_and_does_not_leak(drop, monkeypatch, capsys):
    """The real checks (not a stub) on a Llama whose attention loses the layout: the batch the trainers then
    build gives exactly the per-sequence log-probs."""
    from transformers.models.llama.modeling_llama import LlamaAttention

    from alignkit.engine.logprobs import supports_prefix_sharing

    monkeypatch.setattr(LlamaAttention, "forward", _attention_that(drop))
    model = build_model(64)
    one_row = enable_segment_attention(model, supports_segments)
    sharing = supports_prefix_sharing(model)
    if drop == "segments":  # the one-row layout is refused; the 4-D block mask still reaches SDPA
        assert not one_row and sharing and "do not follow one-row segments" in capsys.readouterr().err
        assert model.config._attn_implementation == "sdpa"
    else:  # both layouts that need a mask are refused (segment attention's own masks never leave the kernel)
        assert not sharing
    batch = PreferenceCollator(0, prefix_sharing=sharing, one_row=one_row)(ITEMS)
    expected = naive_logps(model, *naive_pairs())
    torch.testing.assert_close(sequence_logps(model, batch).logps, expected, atol=1e-5, rtol=1e-5)


def test_failing_one_call_kernels_fall_back_in_turn_to_the_loop(monkeypatch, capsys):
    """Where a one-call kernel cannot run (a GPU too old for FlashAttention, no compiler for FlexAttention),
    the forward falls back to the next kernel once and for all, with the same values, instead of failing
    the run: varlen, then flex, then the per-segment loop."""
    from alignkit.engine.logprobs import backbone_of, last_hidden_states
    from alignkit.models import segment_attention

    model = segment_model().eval()
    batch = many_blocks_batch()[0]
    with torch.no_grad(), segment_attention.forced_kernel("loop"):
        expected = last_hidden_states(backbone_of(model), batch)

    def broken(reason):
        def kernel(*args, **kwargs):
            raise RuntimeError(reason)

        return kernel

    monkeypatch.setattr(segment_attention, "varlen_segment_attention", broken("FlashAttention needs sm80"))
    monkeypatch.setattr(segment_attention, "flex_segment_attention", broken("no working C compiler"))
    monkeypatch.setattr(segment_attention, "_failed", {})
    order = ("varlen", "flex", "loop")  # kernel_for's order on a CUDA device under bf16
    monkeypatch.setattr(
        segment_attention,
        "kernel_for",
        lambda query, dropout: next(k for k in order if k not in segment_attention._failed),
    )
    with torch.no_grad():
        hidden = last_hidden_states(backbone_of(model), batch)
    torch.testing.assert_close(hidden, expected)
    assert segment_attention._failed == {
        "varlen": "RuntimeError: FlashAttention needs sm80",
        "flex": "RuntimeError: no working C compiler",
    }
    err = capsys.readouterr().err
    assert "the varlen segment-attention kernel failed (RuntimeError: FlashAttention needs sm80); the flex" in err
    assert "the flex segment-attention kernel failed" in err and "the loop kernel serves" in err
    assert err.count("kernel failed") == 2  # once each, not once per layer

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(segment_attention, "varlen_segment_attention", out_of_memory)
    monkeypatch.setattr(segment_attention, "_failed", {})
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):  # not a kernel's failure: no fallback
        last_hidden_states(backbone_of(model), batch)
    assert segment_attention._failed == {}


def test_the_support_check_runs_the_varlen_kernel_where_the_device_has_it(monkeypatch):
    """On a device with the varlen kernel the check runs it too (under bf16 autocast): right spans pass,
    a kernel that lets the whole row attend causally (a leak across sequences) is refused."""
    from alignkit.engine import logprobs
    from alignkit.models import varlen_segments

    monkeypatch.setattr(logprobs, "kernels_to_check", lambda device: ("loop", "varlen"))
    calls = []
    monkeypatch.setattr(varlen_segments, "_KERNEL", [reference_varlen(calls)])
    model = build_model(64)
    assert enable_segment_attention(model, supports_segments) and calls

    def whole_row(query, key, value, cu_q, cu_k, max_q, max_k, scale):
        n = query.shape[0]
        one = torch.tensor([0, n], dtype=torch.int32)
        return reference_varlen([])(query, key[:n], value[:n], one, one, n, n, scale)

    monkeypatch.setattr(varlen_segments, "_KERNEL", [whole_row])
    set_attention(model, "sdpa")
    assert not enable_segment_attention(model, supports_segments)


def test_torchs_varlen_attn_is_called_right_in_each_of_its_signatures(monkeypatch):
    """torch 2.10's ``varlen_attn`` (the first) takes ``is_causal`` and neither a scale nor GQA; later ones a causal
    window, a scale and ``enable_gqa``. Both fakes below follow FlashAttention's semantics and accept only
    what their torch took: the adapter must give the same attention (8 query heads over 2 key heads, a
    scale that is not 1/sqrt(head_dim)) through each."""
    from alignkit.models import varlen_segments

    generator = torch.Generator().manual_seed(3)
    query = torch.randn(17, 8, 16, generator=generator)
    key, value = torch.randn(2, 20, 2, 16, generator=generator)
    cu_q, cu_k = torch.tensor([0, 5, 9, 17], dtype=torch.int32), torch.tensor([0, 5, 12, 20], dtype=torch.int32)
    reference = reference_varlen([])
    expected = reference(query, key, value, cu_q, cu_k, 8, 8, 0.3)

    def newer(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        assert window_size == (-1, 0) and enable_gqa == (k.shape[1] != q.shape[1]) and scale == 0.3
        return reference(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, scale)

    def older(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
        assert is_causal and k.shape[1] == q.shape[1]  # no GQA: the key/value heads come repeated
        return reference(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, None)  # its own scale, 1/sqrt(head_dim)

    for fake in (newer, older):
        monkeypatch.setattr(varlen_segments, "varlen_attn", fake)
        out = varlen_segments._torch_kernel()(query, key, value, cu_q, cu_k, 8, 8, 0.3)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5, msg=fake.__name__)
    monkeypatch.setattr(varlen_segments, "varlen_attn", None)
    assert varlen_segments._torch_kernel() is None


@torch.no_grad()
def test_compiled_flex_kernel_traces_once_for_rows_of_any_length_and_layout(monkeypatch):
    """The GPU's FlexAttention is compiled (``compiled_flex``); a recompile per batch length or number of
    segments would cost seconds a step there. Compiled here on the CPU (forward: no backward on CPU), the
    same tracing: three rows of different lengths and layouts, one graph, and the per-segment loop's values."""
    from alignkit.engine.logprobs import backbone_of, last_hidden_states
    from alignkit.models import flex_segments, segment_attention

    if flex_segments.flex_attention is None:
        pytest.skip("this torch has no FlexAttention")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    monkeypatch.setattr(flex_segments, "_COMPILED", None)
    monkeypatch.setattr(flex_segments, "flex_kernel", lambda device_type: flex_segments.compiled_flex())
    backbone = backbone_of(segment_model().eval())
    full, blocks, plain = many_blocks_batch()
    cut = int(full["segments"][3, 0])  # the first three blocks only: a shorter row, fewer segments
    rows = [
        full,
        {
            "input_ids": full["input_ids"][:, :cut],
            "position_ids": full["position_ids"][:, :cut],
            "segments": full["segments"][:3],
        },
    ]
    rows.append({**rows[1], "segments": torch.tensor([[0, cut, 0, 0]])})  # one causal sequence of the same tokens
    graphs = counters["stats"]["unique_graphs"]
    for batch in rows:
        with segment_attention.forced_kernel("flex"):
            hidden = last_hidden_states(backbone, batch)[0]
        with segment_attention.forced_kernel("loop"):
            torch.testing.assert_close(hidden, last_hidden_states(backbone, batch)[0], atol=1e-5, rtol=1e-5)
    assert counters["stats"]["unique_graphs"] - graphs == 1
    assert len({batch["input_ids"].shape[1] for batch in rows}) == 2 and cut > flex_segments.TILE


def test_a_one_call_kernel_that_raises_in_the_support_check_is_passed_over_not_the_model(monkeypatch, capsys):
    """A GPU without a compiler for FlexAttention: the check used to refuse segments altogether (padded rows
    for the whole run) when the flex kernel raised. Now flex is passed over for the run and the loop serves;
    the loop itself raising still refuses the model."""
    from alignkit.engine import logprobs
    from alignkit.models import segment_attention

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler")

    with_flex = lambda device: segment_attention.kernels_to_check(device) + ("flex",)  # noqa: E731 -- as on a GPU
    monkeypatch.setattr(logprobs, "kernels_to_check", with_flex)
    monkeypatch.setattr(segment_attention, "flex_segment_attention", no_compiler)
    monkeypatch.setattr(segment_attention, "_failed", {})
    model = build_model(64)
    assert enable_segment_attention(model, supports_segments)
    assert segment_attention._failed == {"flex": "RuntimeError: Failed to find C compiler"}
    note = "the flex segment-attention kernel failed (RuntimeError: Failed to find C compiler)"
    assert note in capsys.readouterr().err
    assert "flex" not in segment_attention.kernels_to_check(torch.device("cuda"))  # on a GPU, not checked again

    monkeypatch.setattr(segment_attention, "_attend", no_compiler)  # now the loop (the model's own path) raises
    set_attention(model, "sdpa")
    assert not enable_segment_attention(model, supports_segments)
    assert set(segment_attention._failed) == {"flex"}  # the loop is never recorded as a failed kernel
