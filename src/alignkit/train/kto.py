"""KTO: unpaired desirable/undesirable completions against a KL reference point; the loop is shared."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from alignkit.data.kto import KTOCollator, KTOExample, load_kto_data, tokenize_kto
from alignkit.engine.logprobs import LogProbModel
from alignkit.engine.reference import Reference
from alignkit.losses.kto import kto_kl_estimate, kto_loss, kto_metrics
from alignkit.method_configs import KTOConfig
from alignkit.models.loading import save_final_model
from alignkit.train.common import begin_training, make_reference
from alignkit.train.loop import TrainingResult, TrainingTask, run_training


def kto_compute_loss(model, batch: dict, training: bool, reference: Reference, config: KTOConfig):
    """Batch = B (prompt, completion) sequences then their B mismatched KL sequences."""
    logps = model(batch).logps
    ref = reference(batch)
    half = logps.shape[0] // 2
    kl = kto_kl_estimate(logps[half:], ref[half:])
    losses, rewards = kto_loss(logps[:half], ref[:half], batch["desirable"], kl, config.beta, config.desirable_weight, config.undesirable_weight)
    loss = losses.mean()
    return loss, {"loss": loss.detach(), **kto_metrics(rewards, logps[:half], batch["desirable"], kl)}


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


def train_kto(config: KTOConfig, train_examples: list[KTOExample] | None = None, eval_examples: list[KTOExample] | None = None,
              run_dir: Path | None = None, on_step=None) -> TrainingResult:
    train_examples, eval_examples, run_dir, lm, tokenizer = begin_training(config, load_kto_data, train_examples, eval_examples, run_dir)
    desirable = sum(e.desirable for e in train_examples)
    undesirable = len(train_examples) - desirable
    if desirable == 0 or undesirable == 0:
        print(f"alignkit kto: warning: the training data has {desirable} desirable and {undesirable} undesirable examples; KTO needs both")
    policy = LogProbModel(lm, config.logprob_chunk_size)
    tokenize = partial(tokenize_kto, tokenizer=tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length,
                       apply_chat_template=config.apply_chat_template, seed=config.seed)
    train_items = tokenize(train_examples)
    eval_items = tokenize(eval_examples) if eval_examples and len(eval_examples) >= 2 else []
    collate = KTOCollator(tokenizer.pad_token_id, config.padding_free, config.padding_side, config.prefix_sharing)
    task = TrainingTask(
        model=policy,
        train_items=train_items,
        eval_items=eval_items or None,
        collate=collate,
        compute_loss=partial(kto_compute_loss, reference=make_reference(config, policy, collate, [train_items, eval_items]), config=config),
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
        finalize_metrics=kto_finalize_metrics,
    )
    return run_training(config, task, run_dir)
