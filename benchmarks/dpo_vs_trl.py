"""alignkit vs TRL's DPOTrainer on the same model, pairs and hyperparameters, each run in its own process.

    python benchmarks/dpo_vs_trl.py                                   # parity, then every regime, setting and profile
    python benchmarks/dpo_vs_trl.py --parity-only                     # first-step numerics (fp32) only
    python benchmarks/dpo_vs_trl.py --regimes similar --settings lora --profiles alignkit,trl-fast,trl-lean
    python benchmarks/dpo_vs_trl.py --bf16 --skip-parity              # the same comparison with bf16 on both trainers
    python benchmarks/dpo_vs_trl.py --sweep   # max_length 256..2048: peak memory and step time, plotted

Needs the bench extra: pip install -e '.[bench]'.

How a figure is made: every profile trains the same ``--pairs`` pairs of a regime for 1 epoch and,
in a second fresh process, for 2 epochs; the figure is the difference of the two wall times (the
time of epoch 2: model loading, reference precomputation and warm-up cancel out), and throughput is
the epoch's real tokens (prompt+chosen and prompt+rejected, cut to max_length; never padding) over
that time. Both trainers see exactly the same pairs each epoch. Peak RSS is the 2-epoch process's.
As a check, the 2-epoch run also times its epoch 2 from inside (alignkit's step callback, TRL's
``on_epoch_end``): the "in-run" column. A sample where the two disagree by more than 15% is flagged
(one of its runs started slow, or the epoch is too short for the noise): rerun with ``--repeat``.

Profiles: alignkit with its defaults (gradient checkpointing, prefix sharing, padding-free rows with
segment attention, precomputed reference: ``auto``, fused AdamW) and without checkpointing; alignkit
without prefix sharing and the precomputed reference (``alignkit-no-sharing``); alignkit as it was when
the performance issue was filed (``alignkit-at-issue``: commit 742d026 from a worktree, ``--issue_src``).
TRL at every setting a user could pick to go fast or lean: its default (checkpointing on),
checkpointing off, and its fastest and leanest (``trl-fast``: no checkpointing; ``trl-lean``:
checkpointing; both with ``precompute_ref_log_probs=True``, ``padding_free=True`` and
``optim="adamw_torch_fused"``). TRL 1.16 warns that padding_free is temporarily unavailable and pads
anyway; the padding each trainer really computed is measured and printed (alignkit's counts every
position of its batches, a shared prompt once). alignkit's default is compared with TRL's fastest
profile for throughput and its leanest for memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_workers import PROFILES, run_profile  # benchmarks/, this script's folder, is on sys.path

HERE = Path(__file__).resolve().parent
REGIMES = {
    "spread": HERE / "data" / "bench_pairs.jsonl",
    "similar": HERE / "data" / "similar_pairs.jsonl",
    # held out (make_bench_pairs.py --prose): real prose, never used to tune the engine
    "prose": HERE / "data" / "prose_pairs.jsonl",
    "short": HERE / "data" / "short_pairs.jsonl",
    "equal": HERE / "data" / "equal_pairs.jsonl",
    "long": HERE / "data" / "long_pairs.jsonl",  # make_bench_pairs.py --long, 2026-11-29: the weakest regime
}


def regime_file(name: str) -> Path:
    """A named regime, or any prompt/chosen/rejected JSONL given by its path (pairs the harness never saw)."""
    if name in REGIMES:
        return REGIMES[name]
    if Path(name).is_file():
        return Path(name)
    raise SystemExit(f"--regimes: {name!r} is neither {' nor '.join(REGIMES)} nor a JSONL file")


PARITY_DATA = HERE / "data" / "parity_pairs.jsonl"
SWEEP_DATA = HERE / "data" / "sweep_pairs.jsonl"
RESULTS = HERE / "results"


def real_tokens(model_path: str, rows: list[dict], max_length: int) -> int:
    """Real tokens of one epoch: prompt+chosen and prompt+rejected of every pair, cut to max_length."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    total = 0
    for row in rows:
        prompt = len(tokenizer(row["prompt"])["input_ids"])
        total += sum(
            min(max_length, prompt + len(tokenizer(row[key])["input_ids"]) + 1) for key in ("chosen", "rejected")
        )
    return total


def run_worker(
    profile: str,
    setting: str,
    args,
    data: Path,
    pairs: int,
    epochs: int,
    max_steps: int = 0,
    batch_size: int | None = None,
    max_length: int | None = None,
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        profile,
        "--setting",
        setting,
        "--model",
        args.model,
        "--data",
        str(data),
        "--pairs",
        str(pairs),
        "--epochs",
        str(epochs),
        "--max_steps",
        str(max_steps),
        "--batch_size",
        str(batch_size or args.batch_size),
        "--max_length",
        str(max_length or args.max_length),
        "--learning_rate",
        str(args.learning_rate),
        "--beta",
        str(args.beta),
        "--seed",
        str(args.seed),
    ] + (["--bf16"] if args.bf16 else [])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if profile == "alignkit-at-issue":
        if not (Path(args.issue_src) / "alignkit").is_dir():
            return {"error": f"no alignkit source at {args.issue_src}: git worktree add /tmp/alignkit-at-issue 742d026"}
        env["PYTHONPATH"] = args.issue_src
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        proc = subprocess.run(command + ["--result", result.name], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
        return json.loads(Path(result.name).read_text())


def measure_epoch(profile: str, setting: str, args, data: Path) -> dict:
    """One sample: epoch 2's wall time (2-epoch run minus 1-epoch run) and the 2-epoch run's figures, with
    epoch 2 as timed inside that run (``inner_epoch_s``: a check on the difference, which a slow start of
    either run skews; None when the trainer gives no epoch ends)."""
    one = run_worker(profile, setting, args, data, args.pairs, 1)
    two = run_worker(profile, setting, args, data, args.pairs, 2)
    if "error" in one or "error" in two:
        return {"error": one.get("error") or two.get("error")}
    ends = two.get("epoch_ends_s") or []
    inner = ends[1] - ends[0] if len(ends) == 2 else None
    return {
        "epoch_s": two["wall_s"] - one["wall_s"],
        "inner_epoch_s": inner,
        "runs_s": [one["wall_s"], two["wall_s"]],
        **two,
    }


DISAGREEMENT = 0.15  # a sample whose difference and in-run epoch times differ by more is flagged


def disagreeing(samples: list[dict]) -> list[str]:
    """The samples whose epoch-2 difference and in-run time disagree by more than DISAGREEMENT, described."""
    return [
        f"{s['epoch_s']:.1f} s by difference, {s['inner_epoch_s']:.1f} s in the run"
        for s in samples
        if s.get("inner_epoch_s") and abs(s["epoch_s"] / s["inner_epoch_s"] - 1) > DISAGREEMENT
    ]


def summarize(samples: list[dict], tokens: int) -> dict:
    """The median of ``--repeat`` samples of one profile (epoch time and peak memory), with every sample kept."""
    if any("error" in s for s in samples):
        return next(s for s in samples if "error" in s)
    epoch = statistics.median(s["epoch_s"] for s in samples)
    if epoch <= 0:  # a 2-epoch run no slower than the 1-epoch one: the epoch is smaller than the noise
        return {"error": f"epoch 2 measured {epoch:.1f} s, below the run-to-run noise: use more --pairs"}
    return {
        "epoch_s": epoch,
        "tokens_per_s": tokens / epoch,
        "peak_rss_mb": statistics.median(s["peak_rss_mb"] for s in samples),
        "peak_gpu_mb": samples[0]["peak_gpu_mb"],
        "padding": samples[0]["padding"],
        "epoch_samples_s": [s["epoch_s"] for s in samples],
        "inner_epoch_samples_s": [s.get("inner_epoch_s") for s in samples],
        "disagreeing": disagreeing(samples),
        "runs_s": [s["runs_s"] for s in samples] if len(samples) > 1 else samples[0]["runs_s"],
        "first_losses": samples[0]["losses"],
    }


def compare(args) -> dict:
    """Every regime x setting x profile; prints markdown tables and the ratios against TRL's fastest and leanest."""
    files = {name: regime_file(name) for name in args.regimes.split(",")}
    rows_by_regime = {
        name: [json.loads(line) for line in path.read_text().splitlines()][: args.pairs] for name, path in files.items()
    }
    results: dict = {}
    for regime, rows in rows_by_regime.items():
        tokens = real_tokens(args.model, rows, args.max_length)
        for setting in args.settings.split(","):
            profiles = args.profiles.split(",")
            samples: dict[str, list[dict]] = {p: [] for p in profiles}
            for _ in range(args.repeat):  # profiles interleaved, so a slow spell of the machine hits all alike
                for p in profiles:
                    samples[p].append(measure_epoch(p, setting, args, files[regime]))
            table = {p: summarize(samples[p], tokens) for p in profiles}
            results[f"{regime}/{setting}"] = table
            print_table(
                f"{regime} lengths, {setting}, {len(rows)} pairs ({tokens} real tokens "
                f"per epoch), batch {args.batch_size}, "
                f"max_length {args.max_length}, {'bf16' if args.bf16 else 'fp32'}"
                + (f", median of {args.repeat} runs per profile (range in brackets)" if args.repeat > 1 else ""),
                table,
            )
    return results


def print_table(title: str, table: dict[str, dict]) -> None:
    print(
        f"\n{title}\n\n| profile | epoch 2 (s) | in-run epoch 2 (s) | tokens/s | peak RSS (MB) | "
        "padding computed | first losses |\n|---|---|---|---|---|---|---|"
    )
    for name, row in table.items():
        if "error" in row:
            print(f"| {name} | did not run: {row['error'][:120]} | | | | | |")
            continue
        losses = ", ".join(f"{x:.4f}" for x in row["first_losses"])
        spread = row.get("epoch_samples_s", [])
        spread = f" [{min(spread):.1f}-{max(spread):.1f}]" if len(spread) > 1 else ""
        inner = [x for x in row.get("inner_epoch_samples_s", []) if x]
        inner = f"{statistics.median(inner):.1f}" if inner else ""
        print(
            f"| {name} | {row['epoch_s']:.1f}{spread} | {inner} | {row['tokens_per_s']:.1f} | "
            f"{row['peak_rss_mb']:.0f} | {row['padding']:.0%} | {losses} |"
        )
        for text in row.get("disagreeing", []):
            print(f"|   ^ check this sample: {text} (one run started slow? rerun with --repeat) | | | | | | |")
    trl = {n: r for n, r in table.items() if n.startswith("trl") and "error" not in r}
    mine = table.get("alignkit", {})
    if trl and "error" not in mine and mine:
        fastest = max(trl, key=lambda n: trl[n]["tokens_per_s"])
        leanest = min(trl, key=lambda n: trl[n]["peak_rss_mb"])
        print(
            f"\nalignkit (defaults) vs TRL's fastest ({fastest}): throughput "
            f"x{mine['tokens_per_s'] / trl[fastest]['tokens_per_s']:.2f}; "
            f"vs TRL's leanest ({leanest}): peak RSS x{mine['peak_rss_mb'] / trl[leanest]['peak_rss_mb']:.2f}",
            flush=True,
        )


def parity(args) -> bool:
    """Same 8 short pairs as one batch (order-independent means): first-step loss and mean log-probs."""
    first = {}
    for profile in ("alignkit-no-gc", "trl-no-gc"):
        result = run_worker(profile, "full", args, PARITY_DATA, 8, 1, max_steps=1, batch_size=8, max_length=512)
        if "error" in result:
            raise SystemExit(f"{profile} failed: {result['error']}")
        first[profile] = result["first"]
    mine, peer = first["alignkit-no-gc"], first["trl-no-gc"]
    ok = all(abs(mine[k] - peer[k]) <= 1e-4 for k in mine)
    print("\nfirst-step numerics (fp32, 8 pairs in one batch):")
    for key in mine:
        print(f"  {key:<16} alignkit {mine[key]:.6f}   TRL {peer[key]:.6f}   |diff| {abs(mine[key] - peer[key]):.2e}")
    print(f"  parity within 1e-4: {'YES' if ok else 'NO'}", flush=True)
    return ok


def sweep(args) -> None:
    """Peak memory and step time against max_length (``--sweep_steps`` steps; median step = wall / steps)."""
    lengths = [int(x) for x in args.sweep_lengths.split(",")]
    names = args.sweep_profiles.split(",")
    RESULTS.mkdir(exist_ok=True)
    for setting in args.settings.split(","):
        table: dict[int, dict] = {}
        for max_length in lengths:
            table[max_length] = {}
            for name in names:
                short = run_worker(name, setting, args, SWEEP_DATA, 64, 1, max_steps=1, max_length=max_length)
                long = run_worker(
                    name, setting, args, SWEEP_DATA, 64, 1, max_steps=1 + args.sweep_steps, max_length=max_length
                )
                table[max_length][name] = {
                    "step_s": (long["wall_s"] - short["wall_s"]) / args.sweep_steps,
                    "peak_rss_mb": long["peak_rss_mb"],
                }
            print(
                f"[{setting}, max_length {max_length}] "
                + "; ".join(
                    f"{n}: {r['step_s']:.2f} s/step, {r['peak_rss_mb']:.0f} MB" for n, r in table[max_length].items()
                ),
                flush=True,
            )
        stem = RESULTS / f"sweep_{setting}"
        if args.sweep_merge and stem.with_suffix(".json").exists():  # add these lengths to the points already there
            kept = {int(n): row for n, row in json.loads(stem.with_suffix(".json").read_text()).items()}
            table = dict(sorted({**kept, **table}.items()))
        stem.with_suffix(".json").write_text(json.dumps(table, indent=1))
        plot_sweep(
            table,
            names,
            f"DPO {setting}, batch {args.batch_size} pairs, {args.model.rstrip('/').split('/')[-1]}",
            stem.with_suffix(".png"),
        )
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
        speed.plot(lengths, [table[n][name]["step_s"] for n in lengths], style, marker="o", label=name)
    for axis, label in ((memory, "peak RSS (GiB)"), (speed, "step time (s)")):
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
    parser.add_argument(
        "--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct checkpoint)"
    )
    parser.add_argument(
        "--regimes",
        default="similar,spread",
        help="comma-separated: similar (about 27%% padding in TRL's batches), spread; held out: prose, short, "
        "equal (nearly equal lengths: 18%% padding in TRL's batches); or paths of JSONL pair files",
    )
    parser.add_argument("--settings", default="full,lora")
    parser.add_argument("--profiles", default="alignkit,alignkit-no-gc,trl-default,trl-no-gc,trl-fast,trl-lean")
    parser.add_argument(
        "--repeat", type=int, default=1, help="samples per profile (interleaved); figures are their medians"
    )
    parser.add_argument("--pairs", type=int, default=32, help="pairs per epoch (the first N of the regime's file)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--learning_rate", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision on both trainers (a separate table)")
    parser.add_argument("--parity-only", action="store_true")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--sweep", action="store_true", help="sweep max_length instead of the comparison")
    parser.add_argument("--sweep_lengths", default="256,512,1024,2048")
    parser.add_argument("--sweep_profiles", default="alignkit,alignkit-no-gc,trl-no-gc")
    parser.add_argument("--sweep_steps", type=int, default=2)
    parser.add_argument(
        "--sweep_merge",
        action="store_true",
        help="keep the other lengths already in results/sweep_<setting>.json (measure one point again, or add one)",
    )
    parser.add_argument(
        "--issue_src",
        default="/tmp/alignkit-at-issue/src",
        help="src/ of a worktree of commit 742d026, for the alignkit-at-issue profile",
    )
    # worker mode (internal)
    parser.add_argument("--worker", choices=sorted(PROFILES))
    parser.add_argument("--setting", default="full")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max_steps", type=int, default=0)
    parser.add_argument("--result")
    args = parser.parse_args()
    if not args.worker:  # names checked before any run: a misspelt profile used to fail in its worker, runs later
        for option, names, known in (
            ("--profiles", args.profiles, PROFILES),
            ("--sweep_profiles", args.sweep_profiles, PROFILES),
            ("--settings", args.settings, ("full", "lora")),
        ):
            unknown = [name for name in names.split(",") if name not in known]
            if unknown:
                parser.error(f"{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        for name in args.regimes.split(","):
            regime_file(name)
    if args.model is None:
        from alignkit.models.embedded import embedded_model_path

        args.model = str(embedded_model_path())
    if args.worker:
        run_profile(args)
        return
    if args.sweep:
        sweep(args)
        return
    if not args.skip_parity:
        parity(args)
    if not args.parity_only:
        results = compare(args)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
