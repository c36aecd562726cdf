"""The worker side of ``dpo_vs_trl.py``: each profile's settings, and one training run of alignkit or
TRL in this process (``dpo_vs_trl.py --worker PROFILE ...`` calls :func:`run_profile`), reporting its
wall time, first losses, the padding it really computed and its peak memory."""

from __future__ import annotations

import inspect
import json
import os
import resource
import tempfile
import time
from pathlib import Path

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
PROFILES = {
    "alignkit": {"gradient_checkpointing": True},  # its defaults: prefix sharing, padding-free, precompute auto
    "alignkit-no-gc": {"gradient_checkpointing": False},
    # today's engine with prefix sharing and the precomputed reference turned off
    "alignkit-no-sharing": {"gradient_checkpointing": True, "prefix_sharing": False, "precompute_ref_log_probs": False},
    # alignkit as it was when the performance issue was filed (commit 742d026, its defaults), run from a
    # worktree of that commit: git worktree add /tmp/alignkit-at-issue 742d026 (see --issue_src)
    "alignkit-at-issue": {"gradient_checkpointing": True},
    "trl-default": {"gradient_checkpointing": True},
    "trl-no-gc": {"gradient_checkpointing": False},
    # TRL's fastest and leanest settings, fused AdamW included (alignkit uses it where it fits)
    "trl-fast": {
        "gradient_checkpointing": False,
        "precompute_ref_log_probs": True,
        "padding_free": True,
        "optim": "adamw_torch_fused",
    },
    "trl-lean": {
        "gradient_checkpointing": True,
        "precompute_ref_log_probs": True,
        "padding_free": True,
        "optim": "adamw_torch_fused",
    },
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count_alignkit_padding(counted: dict) -> None:
    """Wrap alignkit's pair collator so that every batch it builds (reference pass included) adds its
    computed positions and, of those, the real ones (a shared prompt counts once) to ``counted``."""
    from alignkit.data.collate import PreferenceCollator

    build = PreferenceCollator.__call__

    def counting(self, items):
        batch = build(self, items)
        mask = batch.get("attention_mask")
        shared = "segments" in batch or (mask is not None and mask.dim() == 4)
        for item in items:
            pair = item["pair"]
            prompt, chosen, rejected = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
            counted["real"] += prompt + chosen + rejected if shared else 2 * prompt + chosen + rejected
        counted["total"] += batch["input_ids"].numel()
        return batch

    PreferenceCollator.__call__ = counting


def worker_alignkit(args, rows: list[dict], options: dict) -> dict:
    try:
        from alignkit.configs import DPOConfig
    except ImportError:  # alignkit-at-issue: the configs were one module then
        from alignkit.config import DPOConfig
    from alignkit.train.dpo import train_dpo
    from alignkit.train.metrics_log import read_metrics

    counted = {"real": 0, "total": 0}
    count_alignkit_padding(counted)

    with tempfile.TemporaryDirectory() as out:
        data = Path(out) / "pairs.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = DPOConfig(
            model=args.model,
            train_data=str(data),
            eval_split=0.0,
            output_dir=str(Path(out) / "run"),
            overwrite=True,
            per_device_train_batch_size=args.batch_size,
            max_length=args.max_length,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps or -1,
            learning_rate=args.learning_rate,
            beta=args.beta,
            seed=args.seed,
            logging_steps=1,
            save_steps=10**9,
            save_total_limit=1,
            report_to=["none"],
            disable_tqdm=True,
            apply_chat_template=False,
            warmup_ratio=0.0,
            lr_scheduler_type="constant",
            preflight=False,
            use_peft=args.setting == "lora",
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            lora_target_modules=LORA_TARGETS,
            mixed_precision="bf16" if args.bf16 else None,
            **options,
        )
        os.environ["ALIGNKIT_CACHE"] = str(
            Path(out) / "cache"
        )  # the reference pass is timed in every run, never read from a cache
        step_ends: dict[int, float] = {}
        start = time.perf_counter()
        if "on_step" in inspect.signature(train_dpo).parameters:  # alignkit-at-issue had no step callback
            train_dpo(config, on_step=lambda step: step_ends.__setitem__(step, time.perf_counter() - start))
        else:
            train_dpo(config)
        wall = time.perf_counter() - start
        records = [r for r in read_metrics(config.output_dir) if "loss" in r]
    # the steps that close an epoch log a whole epoch number (logging_steps 1)
    epoch_ends = [step_ends[r["step"]] for r in records if r.get("epoch", 0.5) % 1 == 0 and r.get("step") in step_ends]
    return _result(wall, records, counted, epoch_ends)


def worker_trl(args, rows: list[dict], options: dict) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    counted = {"real": 0, "total": 0}
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out,
            use_cpu=not torch.cuda.is_available(),
            bf16=args.bf16,
            per_device_train_batch_size=args.batch_size,
            max_length=args.max_length,
            learning_rate=args.learning_rate,
            beta=args.beta,
            seed=args.seed,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps or -1,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            lr_scheduler_type="constant",
            warmup_steps=0,
            disable_tqdm=True,
            **options,
        )
        peft_config = (
            LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
            if args.setting == "lora"
            else None
        )
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        collate = trainer.data_collator

        def counting(examples):  # the padding TRL really computes
            batch = collate(examples)
            counted["real"] += int(batch["attention_mask"].sum())
            counted["total"] += batch["attention_mask"].numel()
            return batch

        trainer.data_collator = counting
        epoch_ends: list[float] = []

        class EpochClock(TrainerCallback):
            def on_epoch_end(self, *args, **kwargs):
                epoch_ends.append(time.perf_counter() - start)

        trainer.add_callback(EpochClock())
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        records = [r for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]
    return _result(wall, records, counted, epoch_ends)


def _result(wall: float, records: list[dict], counted: dict, epoch_ends: list[float]) -> dict:
    """One run's figures; ``counted``: the real and the total positions of every batch it computed;
    ``epoch_ends``: seconds from the start of training to the end of each epoch, timed in the process."""
    import alignkit

    return {
        "wall_s": wall,
        "epoch_ends_s": epoch_ends,
        "losses": [r["loss"] for r in records][:3],
        "padding": 1 - counted["real"] / max(counted["total"], 1),
        "first": {k: records[0].get(k) for k in ("loss", "logps/chosen", "logps/rejected")} if records else {},
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": _peak_gpu_mb(),
        "source": str(Path(alignkit.__file__).parent),
    }


def _peak_gpu_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_profile(args) -> None:
    """Train ``args.worker``'s profile on the first ``args.pairs`` pairs of ``args.data``; write the result JSON."""
    rows = [json.loads(line) for line in args.data.read_text().splitlines()][: args.pairs]
    work = worker_alignkit if args.worker.startswith("alignkit") else worker_trl
    Path(args.result).write_text(json.dumps(work(args, rows, PROFILES[args.worker])))
