"""Run every shipped training example, then `alignkit eval` on its run, and report the capability probes.

    python examples/check_examples.py [--out alignkit-runs/check] [--only dpo,kto]

Each example is trained as shipped (only output_dir, and for dpo_from_sft/reward the SFT run they start
from, are redirected), then evaluated against the model it started from with `alignkit eval`'s default
probes (perplexity, arithmetic, facts; the same tolerances). A table of before/after per probe is printed
and written to <out>/check.json; the exit status is 1 if any probe regressed. The reward example trains a
classifier, which answers no questions, so it is trained but not probed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (name, command, config); order matters: dpo_from_sft and reward start from the sft run
EXAMPLES = [
    ("sft", "sft", "examples/sft.yaml"),
    ("dpo_from_sft", "dpo", "examples/dpo_from_sft.yaml"),
    ("reward", "reward", "examples/reward.yaml"),
    ("dpo", "dpo", "examples/dpo.yaml"),
    ("dpo_lora", "dpo", "examples/dpo_lora.yaml"),
    ("kto", "kto", "examples/kto.yaml"),
    ("orpo", "orpo", "examples/orpo.yaml"),
    ("ppo", "ppo", "examples/ppo.yaml"),
    ("grpo", "grpo", "examples/grpo.yaml"),
    ("rloo", "rloo", "examples/rloo.yaml"),
]
HELD_OUT = [
    "--prompts",
    "examples/data/prompts_heldout.jsonl",
    "--pairs",
    "examples/data/arithmetic_pairs_heldout.jsonl",
]


def alignkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignkit", *args], cwd=REPO, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="alignkit-runs/check")
    parser.add_argument("--only", default="", help="comma-separated example names (default: all)")
    args = parser.parse_args()
    out = (REPO / args.out).resolve()
    wanted = set(filter(None, args.only.split(",")))
    results = {}
    for name, command, config in EXAMPLES:
        if wanted and name not in wanted:
            continue
        run = out / name
        extra = ["--model", str(out / "sft" / "final")] if name in ("dpo_from_sft", "reward") else []
        started = time.time()
        trained = alignkit(command, config, "--output_dir", str(run), "--overwrite", "--disable_tqdm", *extra)
        if trained.returncode != 0:
            results[name] = {"error": f"training failed ({trained.returncode}): {trained.stderr[-800:]}"}
            print(f"{name}: training FAILED\n{trained.stderr[-800:]}", flush=True)
            continue
        if command == "reward":
            results[name] = {
                "probes": [],
                "note": "a reward model answers no questions; not probed",
                "seconds": round(time.time() - started),
            }
            print(f"{name}: trained ({results[name]['seconds']} s); not probed (a classifier)", flush=True)
            continue
        evaluated = alignkit(
            "eval", "--model", str(run), *HELD_OUT, "--max_new_tokens", "48", "--overwrite", "--disable_tqdm"
        )
        if evaluated.returncode != 0:
            results[name] = {"error": f"eval failed ({evaluated.returncode}): {evaluated.stderr[-800:]}"}
            print(f"{name}: eval FAILED\n{evaluated.stderr[-800:]}", flush=True)
            continue
        found = json.loads((run / "eval" / "eval_results.json").read_text())
        results[name] = {
            "probes": found["probes"],
            "win_rate": (found.get("win_rate") or {}).get("win_rate"),
            "seconds": round(time.time() - started),
        }
        line = ", ".join(
            f"{p['probe']} {p['before']:.3f} -> {p['after']:.3f}{' REGRESSED' if p['regressed'] else ''}"
            for p in found["probes"]
        )
        print(f"{name}: {line} ({results[name]['seconds']} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(results, indent=1))
    failed = [n for n, r in results.items() if "error" in r or any(p["regressed"] for p in r["probes"])]
    print(
        f"\n{len(results) - len(failed)} of {len(results)} examples without regression"
        + (f"; regressed or failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
