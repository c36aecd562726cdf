"""Mixed precision: bf16 on CPU only where the processor has native bf16 (read from its flags),
``auto`` picks bf16 on GPUs only, and a bf16 run on such a CPU trains like fp32."""

import math

import pytest
from conftest import needs_bf16

from alignkit.errors import AlignkitError
from alignkit.train.backends import cpu_bf16_flags, resolve_mixed_precision
from alignkit.train.metrics_log import read_metrics

SAPPHIRE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"


def test_flags_are_read_not_guessed():
    assert cpu_bf16_flags(SAPPHIRE) == ["avx512_bf16", "amx_bf16"]
    assert cpu_bf16_flags(SKYLAKE) == [] and cpu_bf16_flags("") == []


def test_cpu_choices():
    assert (
        resolve_mixed_precision("auto", cuda=False, cpu_flags=["avx512_bf16"]) == "no"
    )  # fp32 stays the default on CPU
    assert resolve_mixed_precision("bf16", cuda=False, cpu_flags=["amx_bf16"]) == "bf16"
    with pytest.raises(AlignkitError, match="emulated"):
        resolve_mixed_precision("bf16", cuda=False, cpu_flags=[])
    with pytest.raises(AlignkitError, match="CUDA"):
        resolve_mixed_precision("fp16", cuda=False, cpu_flags=["amx_bf16"])
    assert (
        resolve_mixed_precision(None, cuda=False, cpu_flags=[]) is None
        and resolve_mixed_precision("no", cuda=False, cpu_flags=[]) == "no"
    )


@needs_bf16
def test_a_bf16_run_tracks_the_fp32_run(tiny_model_dir, pairs_file, tmp_path):
    from test_training import config_for

    from alignkit.train.dpo import train_dpo

    losses = {}
    for precision in ("no", "bf16"):
        train_dpo(
            config_for(
                tiny_model_dir, pairs_file, tmp_path / precision, "--max_steps", "4", "--mixed_precision", precision
            )
        )
        losses[precision] = [r["loss"] for r in read_metrics(tmp_path / precision) if "loss" in r]
    # policy == reference at step 1: the precomputed reference ran under the same bf16 autocast
    assert losses["bf16"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert (
        losses["bf16"] == pytest.approx(losses["no"], abs=0.05) and losses["bf16"] != losses["no"]
    )  # autocast really ran


@needs_bf16
def test_an_unset_precision_after_a_bf16_run_in_the_same_process_is_fp32(monkeypatch):
    from alignkit.train.backends import make_accelerator

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert make_accelerator("bf16").mixed_precision == "bf16"
    assert (
        make_accelerator(None).mixed_precision == "no"
    )  # the API called twice: the second run must not inherit bf16 autocast
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert make_accelerator(None).mixed_precision == "bf16"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert make_accelerator(None).mixed_precision == "no"


def test_in_ci_a_skip_fails_unless_the_cpu_truly_lacks_bf16():
    from conftest import NO_BF16, ci_skip_verdict

    assert ci_skip_verdict(NO_BF16, ci=False, cpuinfo=SKYLAKE) == "skip"
    assert ci_skip_verdict(NO_BF16, ci=True, cpuinfo=SKYLAKE) == "no-bf16"  # skipped, said in one line
    assert ci_skip_verdict(NO_BF16, ci=True, cpuinfo=SAPPHIRE) == "fail"  # a broken flag reader would skip here
    assert ci_skip_verdict("no headless browser", ci=True, cpuinfo=SAPPHIRE) == "fail"


def test_tests_never_write_into_the_users_cache():
    from pathlib import Path

    from alignkit.models.embedded import cache_dir

    assert cache_dir() != Path.home() / ".cache" / "alignkit" and cache_dir().is_dir()


@needs_bf16
def test_a_bf16_lora_run_through_the_one_call_varlen_path_matches_the_per_segment_loop(
    tiny_model_dir, pairs_file, tmp_path, monkeypatch
):
    """What a GPU under bf16 runs, on a CPU: every forward (reference pass, checkpointed recompute,
    backward) through the varlen kernel, here a stand-in with FlashAttention's semantics. Step 1 is
    log 2 (the reference cache keeps the two kernels' values apart: they differ at bf16's rounding) and
    the losses are the per-segment loop's."""
    from test_segment_attention import reference_varlen
    from test_training import config_for

    from alignkit.models import segment_attention, varlen_segments
    from alignkit.train.dpo import train_dpo

    calls = []
    losses = {}
    for kernel in ("loop", "varlen"):
        with monkeypatch.context() as patch:
            patch.setenv(segment_attention.KERNEL_VARIABLE, kernel)
            patch.setattr(varlen_segments, "_KERNEL", [reference_varlen(calls)])
            patch.setattr(varlen_segments, "usable", lambda query, dropout: True)
            out = tmp_path / kernel
            train_dpo(config_for(tiny_model_dir, pairs_file, out, "--max_steps", "3", "--mixed_precision", "bf16"))
        losses[kernel] = [r["loss"] for r in read_metrics(out) if "loss" in r]
        assert bool(calls) == (kernel == "varlen")
    assert losses["varlen"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert losses["varlen"] == pytest.approx(losses["loop"], abs=2e-3)
