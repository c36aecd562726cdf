"""Two CPU processes against one with the same global batch: plain DDP (accelerate launch, gloo),
DeepSpeed ZeRO-2 / ZeRO-3 (the shipped configs, on DeepSpeed's CPU accelerator) and FSDP2 (the shipped
config, on gloo) give the same loss curve and final weights; metrics and checkpoints are written once;
resume works across both processes; with LoRA under sharding the reference is the policy with adapters
disabled, and PPO (value head, sampling) reproduces one process."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_pairs, write_prompts
from safetensors.torch import load_file

from alignkit.train.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
LAUNCHES = {
    "ddp": ["--multi_gpu"],
    "zero2": ["--config_file", str(REPO / "examples/accelerate/zero2_bf16.yaml"), "--mixed_precision", "no"],
    "zero3": ["--config_file", str(REPO / "examples/accelerate/zero3.yaml"), "--mixed_precision", "no"],
    "fsdp2": ["--config_file", str(REPO / "examples/accelerate/fsdp2.yaml"), "--mixed_precision", "no"],
}


def needs_deepspeed(kind: str) -> None:  # (FSDP2 is part of torch)
    if kind.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        if os.environ.get("CI"):
            pytest.fail("deepspeed is not installed; the README's test set-up installs it ('.[test]')")
        pytest.skip("deepspeed is not installed (pip install 'alignkit[deepspeed]')")


def run(
    args: list[str], kind: str | None, program: tuple[str, ...] = ("-m", "alignkit")
) -> subprocess.CompletedProcess:
    """``alignkit dpo ARGS`` (or ``program``'s) in one process, or in two launched as ``kind``; plain DDP
    as TRL's CLI spells it (``--num_processes 2``: alignkit relaunches itself under accelerate)."""
    if kind == "ddp" and program == ("-m", "alignkit"):
        launch, args = [sys.executable], [*args, "--num_processes", "2"]
    elif kind:
        launch = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCHES[kind], "--num_processes", "2"]
    else:
        launch = [sys.executable]
    return subprocess.run([*launch, *program, "dpo", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def assert_same_run(one: Path, two: Path, rel: float = 1e-4, atol: float = 1e-5) -> None:
    single, double = read_metrics(one, timings=False), read_metrics(two, timings=False)
    assert [(r["step"], sorted(r)) for r in single] == [
        (r["step"], sorted(r)) for r in double
    ]  # logged once, same records
    for a, b in zip(single, double):
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=rel, abs=atol), (a["step"], key)
    wa, wb = (
        load_file(str(one / "checkpoint-4" / "trainable.safetensors")),
        load_file(str(two / "checkpoint-4" / "trainable.safetensors")),
    )
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=atol) for k in wa)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("distributed")
    data = write_pairs(root / "pairs.jsonl", 16)
    common = [
        "--model",
        str(tiny_model_dir),
        "--train_data",
        str(data),
        "--disable_tqdm",
        "--report_to",
        "none",
        "--max_length",
        "64",
        "--max_prompt_length",
        "32",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--preflight",
        "false",
        "--max_steps",
        "4",
        "--eval_split",
        "0.25",
        "--preflight",
        "false",
        "--save_steps",
        "2",
        "--eval_steps",
        "2",
    ]
    one = run(
        common
        + [
            "--output_dir",
            str(root / "one"),
            "--per_device_train_batch_size",
            "4",
            "--per_device_eval_batch_size",
            "2",
        ],
        None,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    # eval batches of 4 over 4 held-out pairs: the second process has none and must still take part
    return root, common + ["--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4"]


@pytest.fixture(scope="module")
def two_process_runs(setup):
    return {}


def two_process_run(setup, runs: dict, kind: str) -> Path:
    root, args = setup
    if kind not in runs:
        out = root / kind
        result = run(args + ["--output_dir", str(out)], kind)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[kind] = out
    return runs[kind]


@pytest.mark.parametrize("kind", ["ddp", "zero2", "zero3", "fsdp2"])
def test_two_processes_follow_the_single_process_run(setup, two_process_runs, kind):
    needs_deepspeed(kind)
    out = two_process_run(setup, two_process_runs, kind)
    assert_same_run(setup[0] / "one", out)
    expected = [
        ".alignkit-run",
        "all_results.json",
        "checkpoint-2",
        "checkpoint-4",
        "config.yaml",
        "environment.json",
        "final",
        "metrics.jsonl",
    ]  # written once, by the main process
    assert sorted(p.name for p in out.iterdir()) == expected
    single, double = (
        load_file(str(setup[0] / "one" / "final" / "model.safetensors")),
        load_file(str(out / "final" / "model.safetensors")),
    )
    assert all(torch.allclose(single[k], double[k], atol=1e-5) for k in single)  # whole weights, gathered under ZeRO-3
    manifest = (out / "checkpoint-4" / "manifest.json").read_text()
    if kind.startswith("zero"):  # DeepSpeed's sharded optimizer state: one file per process, covered by the manifest
        assert (
            len(list((out / "checkpoint-4" / "deepspeed").glob("*optim_states.pt"))) == 2 and '"deepspeed/' in manifest
        )
    if kind == "fsdp2":
        assert '"optimizer_rank0.pt"' in manifest and '"optimizer_rank1.pt"' in manifest


@pytest.mark.parametrize("kind", ["ddp", "zero3", "fsdp2"])
def test_resume_across_two_processes(setup, two_process_runs, kind):
    needs_deepspeed(kind)
    finished = two_process_run(setup, two_process_runs, kind)
    resumed = setup[0] / f"{kind}-resumed"
    shutil.copytree(finished, resumed)
    shutil.rmtree(resumed / "checkpoint-4")
    shutil.rmtree(resumed / "final")
    result = run(setup[1] + ["--output_dir", str(resumed), "--resume"], kind)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("resumed from") == 1  # said once, by the main process
    assert read_metrics(resumed, timings=False) == read_metrics(finished, timings=False)
    wa, wb = (
        load_file(str(finished / "checkpoint-4" / "trainable.safetensors")),
        load_file(str(resumed / "checkpoint-4" / "trainable.safetensors")),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("kind", ["zero3", "fsdp2"])
def test_lora_under_sharding_uses_the_policy_with_adapters_disabled_as_reference(setup, kind):
    """Sharded LoRA training matches one process (no LoRA dropout, so the runs are deterministic): the
    reference log-probs, taken from the gathered base weights with adapters off, are right."""
    needs_deepspeed(kind)
    root, args = setup
    lora = ["--use_peft", "true", "--lora_dropout", "0", "--learning_rate", "1e-2"]
    if not (root / "lora-one").exists():
        one = run(
            args[:-4]
            + lora
            + [
                "--output_dir",
                str(root / "lora-one"),
                "--per_device_train_batch_size",
                "4",
                "--per_device_eval_batch_size",
                "2",
            ],
            None,
        )
        assert one.returncode == 0, one.stderr[-2000:]
    two = run(args + lora + ["--output_dir", str(root / f"lora-{kind}")], kind)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_run(root / "lora-one", root / f"lora-{kind}")
    first = read_metrics(root / f"lora-{kind}")[0]
    assert first["loss"] == pytest.approx(0.693147, abs=1e-5)  # policy == reference before the first update
    single, sharded = (
        load_file(str(root / run_name / "final" / "adapter_model.safetensors"))
        for run_name in ("lora-one", f"lora-{kind}")
    )
    assert single.keys() == sharded.keys() and all(torch.allclose(single[k], sharded[k], atol=1e-5) for k in single)


@pytest.mark.parametrize("kind", ["zero3", "fsdp2"])
def test_ppo_with_lora_under_sharding_follows_one_process_and_resumes(setup, tiny_model_dir, kind):
    """Every process samples the same prompts with the same seed, so two sharded processes (policy,
    value head and LoRA reference; generation kept in step across processes) must reproduce one
    process exactly; and a resumed sharded run must reproduce the uninterrupted one."""
    from test_rl import rl_args

    needs_deepspeed(kind)
    root = setup[0]
    prompts = write_prompts(root / "prompts.jsonl")
    extra = [
        "--max_steps",
        "3",
        "--save_steps",
        "2",
        "--eval_steps",
        "2",
        "--use_peft",
        "--lora_r",
        "4",
        "--lora_dropout",
        "0",
    ]

    def ppo(out: str, kind: str | None, *more: str) -> None:
        launch = (
            [sys.executable, "-m", "accelerate.commands.launch", *LAUNCHES[kind], "--num_processes", "2"]
            if kind
            else [sys.executable]
        )
        result = subprocess.run(
            [*launch, "-m", "alignkit", "ppo", *rl_args(tiny_model_dir, prompts, root / out, *extra, *more)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    if not (root / "ppo-one").exists():
        ppo("ppo-one", None)
    ppo(f"ppo-{kind}", kind)
    single, sharded = read_metrics(root / "ppo-one", timings=False), read_metrics(root / f"ppo-{kind}", timings=False)
    assert [sorted(r) for r in single] == [sorted(r) for r in sharded]
    for a, b in zip(single, sharded):
        for key, value in a.items():
            if isinstance(value, float):
                # a clip fraction counts tokens past a threshold: a token on the boundary may fall either side
                # under rounding-level differences (ZeRO-3's own linear layers), one token of the 96 in a step
                tolerance = 1 / 96 + 1e-6 if key.endswith("clipfrac") else 1e-5
                assert b[key] == pytest.approx(value, rel=1e-4, abs=tolerance), (a["step"], key)
    wa, wb = (
        load_file(str(root / name / "checkpoint-3" / "trainable.safetensors")) for name in ("ppo-one", f"ppo-{kind}")
    )
    assert any("value_head" in k for k in wa) and all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    resumed = f"ppo-{kind}-resumed"
    shutil.copytree(root / f"ppo-{kind}", root / resumed)
    shutil.rmtree(root / resumed / "checkpoint-3")
    shutil.rmtree(root / resumed / "final")
    ppo(resumed, kind, "--resume")
    assert read_metrics(root / resumed, timings=False) == sharded
    wc = load_file(str(root / resumed / "checkpoint-3" / "trainable.safetensors"))
    assert all(torch.equal(wb[k], wc[k]) for k in wb)


def test_an_update_whose_attention_backward_fails_is_redone_under_ddp(setup, two_process_runs):
    """A one-call kernel that fails in a step's backward (the stand-in of tests/kernel_stand_ins.py) under
    DDP: the failed backward had begun DDP's gradient reduction, which is reset before the update is redone
    with the loop, so the two processes follow the plain DDP run exactly instead of stopping with DDP's
    "Expected to have finished reduction in the prior iteration". (A sharded run refuses the redo:
    tests/test_gpu_correctness.py.)"""
    expected = two_process_run(setup, two_process_runs, "ddp")
    root, args = setup
    out = root / "ddp-flex-fails"
    result = run(args + ["--output_dir", str(out)], "ddp", program=(str(REPO / "tests" / "kernel_stand_ins.py"),))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("the flex segment-attention kernel failed") == 2  # once in each process
    assert_same_run(expected, out)
