"""alignkit vs TRL's DPOTrainer on the same model, pairs and hyperparameters, each in its own process.

    python benchmarks/dpo_vs_trl.py                      # compare: full + LoRA, TRL default and TRL best
    python benchmarks/dpo_vs_trl.py --parity-only        # first-step numerics check only
    python benchmarks/dpo_vs_trl.py --steps 6 --settings lora --max_length 256
    python benchmarks/dpo_vs_trl.py --sweep              # max_length 256..2048: peak memory and step time, plotted

Needs the bench extra: pip install -e '.[bench]'. Prints median step time after warm-up, trained
(real, unpadded) tokens per second, peak RSS and the first three losses per trainer and setting,
then the ratios alignkit / TRL. Each run happens in a fresh subprocess so peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "bench_pairs.jsonl"
PARITY_DATA = HERE / "data" / "parity_pairs.jsonl"
SWEEP_DATA = HERE / "data" / "sweep_pairs.jsonl"
RESULTS = HERE / "results"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
WARMUP_STEPS = 2
# TRL's defaults that matter on a CPU: gradient checkpointing on. Its best here: off (faster; memory is reported).
TRL_PROFILES = {"trl-default": {"gradient_checkpointing": True}, "trl-best": {"gradient_checkpointing": False}}
# alignkit measured both ways: its default (like TRL's) is gradient checkpointing on, trading speed for memory.
ALIGNKIT_PROFILES = {"alignkit": {"gradient_checkpointing": True}, "alignkit-no-gc": {"gradient_checkpointing": False}}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def real_tokens_per_pair(model_path: str, data: Path, max_length: int) -> float:
    """Mean real tokens per pair (prompt+chosen and prompt+rejected, capped at max_length): no padding."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    totals = []
    for line in data.read_text().splitlines():
        row = json.loads(line)
        prompt = len(tokenizer(row["prompt"])["input_ids"])
        for key in ("chosen", "rejected"):
            totals.append(min(max_length, prompt + len(tokenizer(row[key])["input_ids"]) + 1))
    return sum(totals) / (len(totals) / 2)


def worker_alignkit(args) -> dict:
    from alignkit.config import DPOConfig
    from alignkit.train.dpo import train_dpo
    from alignkit.train.metrics_log import read_metrics

    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            model=args.model, train_data=str(args.data), eval_split=0.0, output_dir=out, overwrite=True,
            per_device_train_batch_size=args.batch_size, max_length=args.max_length, max_prompt_length=args.max_length // 2,
            learning_rate=args.learning_rate, beta=args.beta, seed=args.seed, max_steps=args.steps, logging_steps=1,
            save_steps=10**9, save_total_limit=1, report_to=["none"], disable_tqdm=True, apply_chat_template=False,
            warmup_ratio=0.0, lr_scheduler_type="constant", use_peft=args.setting == "lora", lora_r=16, lora_alpha=32,
            lora_dropout=0.0, lora_target_modules=LORA_TARGETS, gradient_checkpointing=args.gradient_checkpointing,
        )
        start = time.perf_counter()
        train_dpo(config, on_step=lambda step: stamps.append(time.perf_counter()))
        records = [r for r in read_metrics(out) if "loss" in r]
    return _result(start, stamps, records)


def worker_trl(args) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(args.seed)
    stamps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out, use_cpu=not torch.cuda.is_available(), bf16=False, per_device_train_batch_size=args.batch_size,
            max_length=args.max_length, learning_rate=args.learning_rate, beta=args.beta, seed=args.seed, max_steps=args.steps,
            logging_steps=1, report_to="none", save_strategy="no", lr_scheduler_type="constant", warmup_steps=0,
            gradient_checkpointing=args.gradient_checkpointing, disable_tqdm=True,
        )
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM") if args.setting == "lora" else None
        trainer = DPOTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[Timer()])
        start = time.perf_counter()
        trainer.train()
        records = [r for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]
    return _result(start, stamps, records)


def _result(start: float, stamps: list[float], records: list[dict]) -> dict:
    times = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    return {
        "step_times": times,
        "losses": [r["loss"] for r in records][:3],
        "first": {k: records[0].get(k) for k in ("loss", "logps/chosen", "logps/rejected")} if records else {},
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": _peak_gpu_mb(),
    }


def _peak_gpu_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_worker(name: str, setting: str, args, data: Path, steps: int, batch_size: int, max_length: int, gradient_checkpointing: bool) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--setting", setting, "--model", args.model, "--data", str(data),
               "--steps", str(steps), "--batch_size", str(batch_size), "--max_length", str(max_length),
               "--learning_rate", str(args.learning_rate), "--beta", str(args.beta), "--seed", str(args.seed)]
    if gradient_checkpointing:
        command.append("--gradient_checkpointing")
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        proc = subprocess.run(command + ["--result", result.name], capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            raise SystemExit(f"{name} ({setting}) failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(result.name).read_text())


def summarize(result: dict, tokens_per_step: float) -> dict:
    timed = result["step_times"][WARMUP_STEPS:] or result["step_times"]
    median = statistics.median(timed)
    return {"median_step_s": median, "tokens_per_s": tokens_per_step / median, "peak_rss_mb": result["peak_rss_mb"],
            "peak_gpu_mb": result.get("peak_gpu_mb"), "first_losses": result["losses"]}


def run_profiles(args, setting: str, data: Path, max_length: int, names: list[str]) -> dict[str, dict]:
    """Each named profile (alignkit / TRL, with or without gradient checkpointing) in its own process."""
    tokens_per_step = real_tokens_per_pair(args.model, data, max_length) * args.batch_size
    rows = {}
    for name in names:
        worker = "alignkit" if name in ALIGNKIT_PROFILES else "trl"
        options = {**ALIGNKIT_PROFILES, **TRL_PROFILES}[name]
        result = run_worker(worker, setting, args, data, args.steps, args.batch_size, max_length, options["gradient_checkpointing"])
        rows[name] = {**summarize(result, tokens_per_step), "tokens_per_step": tokens_per_step}
    return rows


def print_rows(rows: dict[str, dict]) -> None:
    gpu = any(row["peak_gpu_mb"] for row in rows.values())
    print(f"  {'trainer':<12} {'step s':>8} {'tokens/s':>9} {'peak RSS MB':>12}" + (f" {'peak GPU MB':>12}" if gpu else "") + "  first losses")
    for name, row in rows.items():
        losses = ", ".join(f"{x:.4f}" for x in row["first_losses"])
        extra = f" {row['peak_gpu_mb']:12.0f}" if gpu else ""
        print(f"  {name:<12} {row['median_step_s']:8.2f} {row['tokens_per_s']:9.1f} {row['peak_rss_mb']:12.0f}{extra}  {losses}")


def parity(args) -> bool:
    """Same 8 short pairs as one batch (order-independent means): first-step loss and mean log-probs."""
    mine = run_worker("alignkit", "full", args, PARITY_DATA, 1, 8, 512, False)["first"]
    peer = run_worker("trl", "full", args, PARITY_DATA, 1, 8, 512, False)["first"]
    ok = all(abs(mine[k] - peer[k]) <= 1e-4 for k in mine)
    print("\nfirst-step numerics (fp32, 8 pairs in one batch):")
    for key in mine:
        print(f"  {key:<16} alignkit {mine[key]:.6f}   TRL {peer[key]:.6f}   |diff| {abs(mine[key] - peer[key]):.2e}")
    print(f"  parity within 1e-4: {'YES' if ok else 'NO'}")
    return ok


def compare(args) -> None:
    tokens_per_step = real_tokens_per_pair(args.model, DATA, args.max_length) * args.batch_size
    print(f"model {args.model}; {DATA.name}; batch {args.batch_size} pairs; max_length {args.max_length}; {args.steps} steps "
          f"(median of steps {WARMUP_STEPS + 1}..{args.steps}); {tokens_per_step:.0f} real tokens per step")
    for setting in args.settings.split(","):
        rows = run_profiles(args, setting, DATA, args.max_length, [*ALIGNKIT_PROFILES, *TRL_PROFILES])
        print(f"\n[{setting}]")
        print_rows(rows)
        for mine in ALIGNKIT_PROFILES:
            for profile in TRL_PROFILES:
                peer = rows[profile]
                memory = f"peak RSS x{rows[mine]['peak_rss_mb'] / peer['peak_rss_mb']:.2f}"
                if peer["peak_gpu_mb"]:
                    memory += f", peak GPU x{rows[mine]['peak_gpu_mb'] / peer['peak_gpu_mb']:.2f}"
                print(f"  {mine} / {profile}: throughput x{rows[mine]['tokens_per_s'] / peer['tokens_per_s']:.2f}, {memory}")


def sweep(args) -> None:
    """Peak memory and step time against max_length for each profile; a table, a JSON file and a PNG."""
    lengths = [int(x) for x in args.sweep_lengths.split(",")]
    names = args.sweep_profiles.split(",")
    RESULTS.mkdir(exist_ok=True)
    for setting in args.settings.split(","):
        table = {}
        for max_length in lengths:
            print(f"\n[{setting}, max_length {max_length}, batch {args.batch_size}, {SWEEP_DATA.name}]", flush=True)
            table[max_length] = run_profiles(args, setting, SWEEP_DATA, max_length, names)
            print_rows(table[max_length])
        stem = RESULTS / f"sweep_{setting}"
        stem.with_suffix(".json").write_text(json.dumps(table, indent=1))
        plot_sweep(table, names, f"DPO {setting}, batch {args.batch_size} pairs, {args.model.rstrip('/').split('/')[-1]}", stem.with_suffix(".png"))
        print(f"  wrote {stem.with_suffix('.png')} and {stem.with_suffix('.json')}")


def plot_sweep(table: dict[int, dict], names: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(table)
    fig, (memory, speed) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in names:
        style = "-" if name.startswith("alignkit") else "--"
        memory.plot(lengths, [table[n][name]["peak_rss_mb"] / 1024 for n in lengths], style, marker="o", label=name)
        speed.plot(lengths, [table[n][name]["median_step_s"] for n in lengths], style, marker="o", label=name)
    for axis, label in ((memory, "peak RSS (GiB)"), (speed, "median step time (s)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(lengths, [str(n) for n in lengths])
        axis.set_xlabel("max_length (tokens)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    speed.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct checkpoint)")
    parser.add_argument("--settings", default="full,lora")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--learning_rate", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--parity-only", action="store_true")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="sweep max_length instead of the comparison (implies --skip-parity)")
    parser.add_argument("--sweep_lengths", default="256,512,1024,2048")
    parser.add_argument("--sweep_profiles", default="alignkit,alignkit-no-gc,trl-default,trl-best")
    # worker mode (internal)
    parser.add_argument("--worker", choices=["alignkit", "trl"])
    parser.add_argument("--setting", default="full")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.model is None:
        from alignkit.models.embedded import embedded_model_path

        args.model = str(embedded_model_path())
    if args.worker:
        result = (worker_alignkit if args.worker == "alignkit" else worker_trl)(args)
        Path(args.result).write_text(json.dumps(result))
        return
    if args.sweep:
        sweep(args)
        return
    if not args.skip_parity:
        parity(args)
    if not args.parity_only:
        compare(args)


if __name__ == "__main__":
    main()
