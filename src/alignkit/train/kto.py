"""KTO: unpaired desirable/undesirable completions against a KL reference point; the loop is shared."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from alignkit.configs import KTOConfig
from alignkit.data.kto import CompletionAndKL, KTOCollator, KTOExample, require_kl_partners
from alignkit.engine.logprobs import LogProbModel
from alignkit.engine.reference import Reference
from alignkit.losses.kto import kto_kl_estimate, kto_loss, kto_metrics
from alignkit.models.loading import save_final_model
from alignkit.train.common import begin_training, make_reference
from alignkit.train.loop import TrainingResult, TrainingTask, run_training


def kto_compute_loss(model, batch: dict, training: bool, reference: Reference, config: KTOConfig):
    """One step on B (prompt, completion) sequences and their B mismatched KL sequences; returns (loss, metrics)."""
    policy = CompletionAndKL.split(model(batch).logps)
    ref = CompletionAndKL.split(reference(batch))
    kl = kto_kl_estimate(policy.kl, ref.kl)
    losses, rewards = kto_loss(
        policy.completion,
        ref.completion,
        batch["desirable"],
        kl,
        config.beta,
        config.desirable_weight,
        config.undesirable_weight,
    )
    loss = losses.mean()
    return loss, {"loss": loss.detach(), **kto_metrics(rewards, policy.completion, batch["desirable"], kl)}


def kto_finalize_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Class means from the averaged per-batch sums and counts (exact however batches split)."""
    out = {k: v for k, v in metrics.items() if not k.endswith("_sum") and not k.startswith("count/")}
    for name in ("rewards", "logps"):
        for side in ("chosen", "rejected"):
            count = metrics.get(f"count/{side}", 0.0)
            if count > 0:
                out[f"{name}/{side}"] = metrics[f"{name}/{side}_sum"] / count
    if "rewards/chosen" in out and "rewards/rejected" in out:
        out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
    return out


def train_kto(
    config: KTOConfig,
    train_examples: list[KTOExample] | None = None,
    eval_examples: list[KTOExample] | None = None,
    run_dir: Path | None = None,
    on_step=None,
) -> TrainingResult:
    """``alignkit kto``: KTO on unpaired desirable/undesirable rows. Data is validated before anything is
    written; pass examples to skip loading. ``on_step(global_step)`` is called after every optimizer step."""
    run = begin_training(config, "kto", train_examples, eval_examples, run_dir)
    lm, tokenizer = run.lm, run.tokenizer
    require_kl_partners(run.train_examples)
    desirable = sum(e.desirable for e in run.train_examples)
    undesirable = len(run.train_examples) - desirable
    if desirable == 0 or undesirable == 0:
        print(
            f"alignkit kto: warning: the training data has {desirable} desirable "
            f"and {undesirable} undesirable examples; KTO needs both"
        )
    policy = LogProbModel(lm, config.logprob_chunk_size)
    train_items = run.train.items
    eval_items = run.eval.items if len(run.eval_examples) >= 2 else []
    collate = run.collator(KTOCollator, config)
    reference = make_reference(config, policy, collate, [train_items, eval_items], tokenizer)
    task = TrainingTask(
        model=policy,
        train_items=train_items,
        eval_items=eval_items or None,
        collate=collate,
        compute_loss=partial(kto_compute_loss, reference=reference, config=config),
        reference=reference,
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
        finalize_metrics=kto_finalize_metrics,
    )
    return run_training(config, task, run.run_dir)
