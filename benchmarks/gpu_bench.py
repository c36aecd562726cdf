"""alignkit vs TRL on a GPU, in one command: seconds per step, tokens/s and peak memory.

    python benchmarks/gpu_bench.py --tokenizer .gpu/tokenizer --out $OUT/gpu_bench.md   # a lent GPU
    python benchmarks/gpu_bench.py --shape tiny --steps 4 --cases dpo-full-similar        # the harness, on CPU

Cases (``--cases`` takes a comma-separated subset; default all, the most telling first): DPO full
fine-tuning and LoRA (r 16, q/k/v/o) on both data regimes of ``benchmarks/data`` (pairs of similar
lengths, and a wide spread), alignkit's defaults against TRL with gradient checkpointing on (its
default) and off, both with a precomputed reference; and SFT with packing against TRL's SFTTrainer
with packing. A random-weight model of Llama-3.2-1B's shape with SmolLM2's vocabulary, bf16, 8 pairs
(or 8 packed rows) a step, max_length 1024. ``--kernels flex,varlen`` adds a run of alignkit per
segment-attention kernel (rows ``alignkit:<kernel>``; the default run uses what ``kernel_for`` picks);
``--trainers alignkit,alignkit-no-gc,trl-gc,trl-no-gc`` adds alignkit without gradient checkpointing.

Each run is its own process (clean peak memory). Per run it prints the mean seconds per step over
every step after the first (the first holds compilation and warm-up), the real tokens per second
over those steps (prompt counted once per sequence it heads: twice for a pair, as TRL computes it),
torch's ``max_memory_allocated`` and the most memory nvidia-smi saw in use while it ran. The table is
printed last and written to ``--out``; each finished row is printed as it lands, so a run cut short
still leaves its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from random_models import build_tokenizer, emit, save_random_model  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
REGIMES = {"similar": HERE / "data" / "similar_pairs.jsonl", "spread": HERE / "data" / "bench_pairs.jsonl"}
TRAINERS = {  # name: (library, options)
    "alignkit": ("alignkit", {}),
    "alignkit-no-gc": ("alignkit", {"gradient_checkpointing": False}),  # only when --trainers names it
    "trl-gc": ("trl", {"gradient_checkpointing": True}),
    "trl-no-gc": ("trl", {"gradient_checkpointing": False}),
}
DEFAULT_TRAINERS = ("alignkit", "trl-gc", "trl-no-gc")


def cases(
    kernels: tuple[str, ...] = (), trainers: tuple[str, ...] = DEFAULT_TRAINERS
) -> list[tuple[str, str, str, str]]:
    """(case name, method+setting, regime, trainer) in the order they run; ``kernels`` adds a run of
    each alignkit trainer per segment-attention kernel (trainer ``<name>:<kernel>``) after its own."""
    ours = [t for t in trainers if t.startswith("alignkit")]
    ours = [f"{t}{suffix}" for t in ours for suffix in ("", *(f":{k}" for k in kernels))]
    theirs = [t for t in trainers if not t.startswith("alignkit")]
    out = []
    for regime in REGIMES:
        for setting in ("dpo-full", "dpo-lora"):
            out += [(f"{setting}-{regime}", setting, regime, trainer) for trainer in ours + theirs]
    for regime in REGIMES:
        sft = ours + [t for t in theirs if t == "trl-gc"]
        out += [(f"sft-packing-{regime}", "sft-packing", regime, trainer) for trainer in sft]
    return out


class StepClock:
    """Wall time of every optimizer step, the device synchronised at each boundary."""

    def __init__(self):
        self.times = [time.perf_counter()]

    def tick(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]


def pair_tokens(tokenizer, row: dict) -> int:
    """Real tokens of a pair as both trainers compute it (prompt with each response)."""
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    prompt = count(row["prompt"])
    return 2 * prompt + count(row["chosen"]) + count(row["rejected"])


def worker(args) -> dict:
    """One run in this process: the case's trainer for ``args.steps`` steps; its timings and memory."""
    import torch

    rows = [json.loads(line) for line in REGIMES[args.regime].read_text().splitlines()]
    clock = StepClock()
    method, setting = args.setting.split("-", 1)
    trainer, _, kernel = args.trainer.partition(":")
    library, options = TRAINERS[trainer]
    if kernel:  # read by segment attention at every layer: this run uses that kernel only
        os.environ["ALIGNKIT_SEGMENT_KERNEL"] = kernel
    out = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    os.environ["ALIGNKIT_CACHE"] = str(out / "cache")  # every run computes its own reference pass
    bf16 = torch.cuda.is_available()
    if library == "alignkit":
        run_alignkit(args, method, setting, rows, out, bf16, options, clock)
    else:
        run_trl(args, method, setting, rows, out, bf16, options, clock)
    tokenizer = build_tokenizer(args.tokenizer)
    per_step = args.batch_size
    if method == "sft":
        tokens_total = sum(
            len(tokenizer(r["prompt"] + r["chosen"], add_special_tokens=False)["input_ids"]) for r in rows
        )
        # packed rows (both trainers pack to max_length) counted as full: an upper bound, the same for both
        tokens_per_step = min(args.max_length, tokens_total) * per_step
    else:
        tokens_per_step = sum(pair_tokens(tokenizer, r) for r in rows) / len(rows) * per_step
    steps = clock.steps()
    timed = steps[1:] or steps
    return {
        "steps": len(steps),
        "first_step_s": steps[0] if steps else None,
        "s_per_step": sum(timed) / len(timed) if timed else None,
        "tokens_per_s": tokens_per_step / (sum(timed) / len(timed)) if timed else None,
        "max_memory_allocated_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "compiled_graphs": compiled_graphs(),  # FlexAttention: 1 per grad mode (+1: a one-tile row); more: recompiles
        "kernel": segment_kernel() if library == "alignkit" else "",
    }


def segment_kernel() -> str:
    """The segment-attention kernel that served alignkit's last step, and any passed over (they failed)."""
    from alignkit.models.segment_attention import kernel_status

    return kernel_status()


def compiled_graphs() -> int:
    """The graphs ``torch.compile`` built in this process (FlexAttention's forward, and its backward)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"]["unique_graphs"])


def run_alignkit(args, method, setting, rows, out, bf16, options, clock) -> None:
    from alignkit.configs import DPOConfig, SFTConfig
    from alignkit.train.dpo import train_dpo
    from alignkit.train.sft import train_sft

    common = dict(
        model=args.model,
        output_dir=str(out / "run"),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=args.steps,
        logging_steps=args.steps,
        save_steps=10**9,
        report_to=["none"],
        disable_tqdm=True,
        apply_chat_template=False,
        preflight=False,
        mixed_precision="bf16" if bf16 else None,
        eval_split=0.0,
        **options,
    )
    data = out / "data.jsonl"
    if method == "dpo":
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        lora = dict(use_peft=True, lora_r=16, lora_alpha=32, lora_target_modules=LORA_TARGETS)
        config = DPOConfig(train_data=str(data), **common, **(lora if setting == "lora" else {}))
        train_dpo(config, on_step=lambda step: clock.tick())
    else:
        sft_rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
        data.write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
        train_sft(SFTConfig(train_data=str(data), packing=True, **common), on_step=lambda step: clock.tick())


def run_trl(args, method, setting, rows, out, bf16, options, clock) -> None:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    class Tick(TrainerCallback):
        def on_train_begin(self, *a, **k):
            clock.times = [time.perf_counter()]

        def on_step_end(self, *a, **k):
            clock.tick()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    common = dict(
        output_dir=str(out / "run"),
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=args.steps,
        logging_steps=args.steps,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        optim="adamw_torch_fused",
        **options,
    )
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        peft = (
            LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
            if setting == "lora"
            else None
        )
        config = DPOConfig(precompute_ref_log_probs=True, **common)
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft,
            callbacks=[Tick()],
        )
    else:
        from trl import SFTConfig, SFTTrainer

        sft_rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(packing=True, **common),
            train_dataset=datasets.Dataset.from_list(sft_rows),
            processing_class=tokenizer,
            callbacks=[Tick()],
        )
    trainer.train()


class SmiPeak(threading.Thread):
    """The most GPU memory nvidia-smi reports in use while a run lasts (GB; None without nvidia-smi)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = None, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                used = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.split()
                value = max(float(u) for u in used) / 1024 if used else None
                if value is not None:
                    self.peak = max(self.peak or 0.0, value)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self.done.wait(0.25)


def table(results: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| case | trainer | s/step | tokens/s | max_memory_allocated GB | nvidia-smi GB | vs TRL's fastest "
        "| kernel, graphs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fastest = {}
    for r in results:
        if r.get("trainer", "").startswith("trl") and r.get("s_per_step"):
            fastest[r["case"]] = min(fastest.get(r["case"], float("inf")), r["s_per_step"])
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['trainer']} | {r['error']} | | | | | |")
            continue
        ratio = fastest.get(r["case"]) / r["s_per_step"] if r["case"] in fastest and r["s_per_step"] else None
        lines.append(
            f"| {r['case']} | {r['trainer']} | {fmt(r['s_per_step'], '.3f')} | {fmt(r['tokens_per_s'], '.0f')} | "
            f"{fmt(r['max_memory_allocated_gb'], '.1f')} | {fmt(r.get('smi_gb'), '.1f')} | "
            f"{'' if ratio is None or not r['trainer'].startswith('alignkit') else f'x{ratio:.2f}'} | "
            f"{', '.join(str(v) for v in (r.get('kernel'), r.get('compiled_graphs')) if v not in (None, ''))} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1b", choices=["1b", "135m", "tiny"])
    parser.add_argument("--tokenizer", default=None, help="a folder with SmolLM2's tokenizer (else a small BPE)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--cases", default=None, help="comma-separated case names (see the docstring)")
    parser.add_argument(
        "--trainers",
        default=",".join(DEFAULT_TRAINERS),
        help=f"comma-separated, of {', '.join(TRAINERS)} (default: {','.join(DEFAULT_TRAINERS)})",
    )
    parser.add_argument(
        "--kernels", default="", help="also run alignkit with each of these segment-attention kernels: loop,flex,varlen"
    )
    parser.add_argument("--timeout", type=int, default=150, help="seconds per run")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--setting", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--regime", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trainer", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args)))
        return 0
    # names are checked before the model is built: a misspelt case on a lent GPU would run nothing
    trainers = tuple(t for t in args.trainers.split(",") if t)
    unknown = [t for t in trainers if t not in TRAINERS]
    if unknown:
        parser.error(f"--trainers: unknown {', '.join(unknown)} (known: {', '.join(TRAINERS)})")
    kernels = tuple(k for k in args.kernels.split(",") if k)
    wanted = set(args.cases.split(",")) if args.cases else None
    known_cases = dict.fromkeys(case for case, *_ in cases(kernels, trainers))
    unknown_cases = sorted((wanted or set()) - set(known_cases))
    if unknown_cases:
        parser.error(f"--cases: unknown {', '.join(unknown_cases)} (known: {', '.join(known_cases)})")
    import torch

    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    started = time.perf_counter()
    model = save_random_model(work / "model", args.shape, args.tokenizer)
    print(f"model ({args.shape}) built in {time.perf_counter() - started:.0f} s", flush=True)
    results = []
    for case, setting, regime, trainer in cases(kernels, trainers):
        if wanted and case not in wanted:
            continue
        result_file = work / f"{case}-{trainer}.json"
        command = [sys.executable, __file__, "--worker", "--model", str(model), "--setting", setting]
        command += ["--regime", regime, "--trainer", trainer, "--result", str(result_file)]
        command += ["--steps", str(args.steps), "--batch_size", str(args.batch_size)]
        command += ["--max_length", str(args.max_length)] + (["--tokenizer", args.tokenizer] if args.tokenizer else [])
        smi = SmiPeak()
        smi.start()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            failed = done.returncode != 0
            reason = (done.stderr.strip().splitlines() or ["?"])[-1][-160:] if failed else ""
        except subprocess.TimeoutExpired:
            failed, reason = True, f"did not finish in {args.timeout} s"
        smi.done.set()
        row = {"case": case, "trainer": trainer}
        if failed or not result_file.is_file():
            row["error"] = reason or "no result"
        else:
            row.update(json.loads(result_file.read_text()), smi_gb=smi.peak)
        results.append(row)
        print(json.dumps(row), flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    header = (
        f"alignkit vs TRL: {device}, torch {torch.__version__}, shape {args.shape}, "
        f"{'bf16' if torch.cuda.is_available() else 'fp32'}, batch {args.batch_size}, max_length {args.max_length}, "
        f"{args.steps} steps per run (s/step: mean of steps 2-{args.steps}), {time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    text = table(results, header)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
