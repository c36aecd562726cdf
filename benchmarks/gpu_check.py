"""Every trainer for 2 steps on a random-weight model, one row each: exit status, seconds, step-1 loss.

    python benchmarks/gpu_check.py                       # on a GPU: SmolLM2-135M's shape, bf16
    python benchmarks/gpu_check.py --shape tiny          # the same matrix on a CPU in about a minute

Each row is ``alignkit <command> examples/<config>.yaml`` with ``--model`` pointing at the random model,
as a user would run it, in its own process. A row passes when the command exits 0 and its first step
is what a policy equal to its reference must give: DPO's loss log 2 (``rpo_alpha 0``), KTO's 0.5, the
RL methods' KL 0; SFT, reward and ORPO only need a finite loss. QLoRA needs CUDA and bitsandbytes: it is
skipped (and says why) elsewhere. The table is printed last and written to ``--out`` (markdown); the
exit status is 1 when any row failed. On a lent machine see benchmarks/README.md ("GPU check").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from random_models import emit, save_random_model  # noqa: E402

LOG2 = math.log(2)
# name, command, example config, extra flags, what step 1 must show
ROWS = [
    ("sft", "sft", "sft.yaml", [], ("loss", None)),
    ("reward (LoRA)", "reward", "reward.yaml", [], ("loss", None)),  # a fresh score head: not log 2
    ("dpo full, precomputed ref", "dpo", "dpo.yaml", ["--precompute_ref_log_probs", "true"], ("loss", LOG2)),
    ("dpo full, live ref", "dpo", "dpo.yaml", ["--precompute_ref_log_probs", "false"], ("loss", LOG2)),
    ("dpo LoRA, precomputed ref", "dpo", "dpo_lora.yaml", ["--precompute_ref_log_probs", "true"], ("loss", LOG2)),
    ("dpo LoRA, live ref", "dpo", "dpo_lora.yaml", ["--precompute_ref_log_probs", "false"], ("loss", LOG2)),
    ("dpo QLoRA (4-bit)", "dpo", "dpo_lora.yaml", ["--load_in_4bit", "true"], ("loss", LOG2)),
    ("kto (LoRA)", "kto", "kto.yaml", [], ("loss", 0.5)),
    ("orpo (LoRA)", "orpo", "orpo.yaml", [], ("loss", None)),
    ("ppo full", "ppo", "ppo.yaml", ["--use_peft", "false"], ("objective/kl", 0.0)),
    ("ppo LoRA", "ppo", "ppo.yaml", ["--use_peft", "true"], ("objective/kl", 0.0)),
    ("grpo", "grpo", "grpo.yaml", [], ("objective/kl", 0.0)),
    ("rloo", "rloo", "rloo.yaml", [], ("objective/kl", 0.0)),
]
PREFERENCE = {"dpo"}  # rpo_alpha 0 makes the DPO loss the preference term alone


def first_value(run_dir: Path, key: str) -> float | None:
    """``key`` at the first training log of a run's metrics.jsonl (None when absent)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("step", 0) >= 1 and key in record:
            return float(record[key])
    return None


def skip_reason(name: str) -> str | None:
    """Why a row cannot run on this machine (QLoRA: CUDA and bitsandbytes), else None."""
    if "QLoRA" not in name:
        return None
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    return None


def run_row(row, model: Path, work: Path, precision: str, timeout: int) -> dict:
    """One trainer's 2 steps in its own process; its status, time and step-1 value."""
    name, command, example, extra, (key, expected) = row
    reason = skip_reason(name)
    if reason:
        return {"row": name, "status": f"skipped: {reason}", "ok": True}
    out = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    args = [sys.executable, "-m", "alignkit", command, str(ROOT / "examples" / example), "--model", str(model)]
    args += ["--output_dir", str(out), "--max_steps", "2", "--logging_steps", "1", "--save_steps", "1000"]
    args += ["--disable_tqdm", "true", "--eval_on_start", "false", "--preflight", "false", "--report_to", "none"]
    args += ["--mixed_precision", precision, *extra]
    if command in PREFERENCE:
        args += ["--rpo_alpha", "0"]
    started = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        status, tail = done.returncode, (done.stdout + done.stderr).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        status, tail = "timeout", []
    value = first_value(out, key)
    ok = status == 0 and value is not None and math.isfinite(value)
    if ok and expected is not None:
        ok = abs(value - expected) <= 1e-3
    return {
        "row": name,
        "status": status,
        "seconds": round(time.perf_counter() - started, 1),
        "key": key,
        "value": value,
        "expected": expected,
        "ok": ok,
        "tail": [] if ok else tail,
    }


def table(results: list[dict], header: str) -> str:
    """The results as a markdown table."""
    lines = [header, "", "| trainer | exit | s | step 1 | expected | |", "|---|---|---|---|---|---|"]
    for r in results:
        if "value" not in r:
            lines.append(f"| {r['row']} | {r['status']} | | | | |")
            continue
        value = "missing" if r["value"] is None else f"{r['key']} {r['value']:.6f}"
        expected = "finite" if r["expected"] is None else f"{r['expected']:.6f}"
        lines.append(
            f"| {r['row']} | {r['status']} | {r['seconds']} | {value} | {expected} | {'PASS' if r['ok'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Build the model, run every row, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="135m", choices=["135m", "1b", "tiny"])
    parser.add_argument("--tokenizer", default=None, help="a folder with SmolLM2's tokenizer (else a small BPE)")
    parser.add_argument("--precision", default=None, help="mixed precision (default: bf16 on CUDA, no elsewhere)")
    parser.add_argument("--only", default=None, help="run the rows whose name contains this (any case)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per row")
    parser.add_argument("--out", default=None, help="write the table here too (markdown)")
    options = parser.parse_args()
    if options.only and not any(options.only.lower() in row[0].lower() for row in ROWS):
        parser.error(f"--only {options.only!r} names no row (rows: {', '.join(row[0] for row in ROWS)})")
    import torch

    precision = options.precision or ("bf16" if torch.cuda.is_available() else "no")
    work = Path(tempfile.mkdtemp(prefix="alignkit-gpu-check-"))
    os.environ.setdefault("ALIGNKIT_CACHE", str(work / "cache"))  # no reference values from earlier runs
    started = time.perf_counter()
    model = save_random_model(work / "model", options.shape, options.tokenizer)
    print(f"model ({options.shape}) built in {time.perf_counter() - started:.1f} s", flush=True)
    results = []
    for row in ROWS:
        if options.only and options.only.lower() not in row[0].lower():
            continue
        results.append(run_row(row, model, work, precision, options.timeout))
        r = results[-1]
        print(json.dumps({k: v for k, v in r.items() if k != "tail"}), flush=True)
        for line in r.get("tail", []):
            print("    " + line[-300:], flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    header = (
        f"GPU check: {device}, torch {torch.__version__}, shape {options.shape}, mixed precision {precision}, "
        f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s in all"
    )
    text = table(results, header)
    emit(text, options.out)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
