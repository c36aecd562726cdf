"""DPO: a loss over four log-prob tensors plus this thin step; the loop is shared."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from alignkit.config import DPOConfig, save_config
from alignkit.data.collate import PreferenceCollator
from alignkit.data.preference import PreferenceExample, load_preference_data
from alignkit.data.records import split_train_eval
from alignkit.data.tokenize import tokenize_pairs
from alignkit.engine.logprobs import LogProbModel
from alignkit.engine.reference import Reference, model_fingerprint, precompute_reference
from alignkit.losses.preference import dpo_loss, preference_metrics
from alignkit.models.embedded import cache_dir
from alignkit.models.loading import load_policy, resolve_model_path, save_final_model
from alignkit.train.loop import TrainingResult, TrainingTask, run_training
from alignkit.train.run_dir import prepare_run_dir


def dpo_compute_loss(model, batch: dict, training: bool, reference: Reference, beta: float, label_smoothing: float):
    """One DPO step: reference log-probs (no grad), policy log-probs (chosen+rejected in one forward), loss."""
    ref = reference(batch)
    policy = model(batch).logps
    half = policy.shape[0] // 2
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy[:half], policy[half:], ref[:half], ref[half:], beta, label_smoothing)
    loss = losses.mean()
    metrics = {"loss": loss.detach(), **preference_metrics(chosen_rewards, rejected_rewards, policy[:half], policy[half:])}
    return loss, metrics


def load_dpo_data(config: DPOConfig) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """Validated train and eval pairs (eval from eval_data, or an eval_split of train_data)."""
    train = load_preference_data(config.train_data)
    if config.eval_data:
        return train, load_preference_data(config.eval_data)
    return split_train_eval(train, config.eval_split, config.seed)


def train_dpo(config: DPOConfig, train_examples: list[PreferenceExample] | None = None, eval_examples: list[PreferenceExample] | None = None,
              run_dir: Path | None = None, on_step=None) -> TrainingResult:
    """Train with DPO. Data is validated before anything is written; pass examples to skip loading.
    ``on_step(global_step)`` is called after every optimizer step."""
    if train_examples is None:
        train_examples, eval_examples = load_dpo_data(config)
    if run_dir is None:
        run_dir = prepare_run_dir(config.output_dir, config.overwrite, config.resume)
    save_config(config, run_dir / "config.yaml")
    torch.manual_seed(config.seed)
    lm, tokenizer = load_policy(config)
    policy = LogProbModel(lm, config.logprob_chunk_size)
    tokenize = partial(tokenize_pairs, tokenizer=tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length, apply_chat_template=config.apply_chat_template)
    train_items = [{"pair": p} for p in tokenize(train_examples)]
    eval_items = [{"pair": p} for p in tokenize(eval_examples or [])]
    collate = PreferenceCollator(tokenizer.pad_token_id, config.padding_free, config.padding_side)
    reference = Reference(policy, use_adapter=config.use_peft, precompute_only=config.precompute_ref_log_probs)
    if config.precompute_ref_log_probs:
        fingerprint = model_fingerprint(resolve_model_path(config.model)) + f"|{config.dtype}"
        for items in (train_items, eval_items):
            if items:
                precompute_reference(reference, items, collate, config.per_device_eval_batch_size, cache_dir(), fingerprint, lm.device, not config.disable_tqdm)
        reference.release()
    task = TrainingTask(
        model=policy,
        train_items=train_items,
        eval_items=eval_items or None,
        collate=collate,
        compute_loss=partial(dpo_compute_loss, reference=reference, beta=config.beta, label_smoothing=config.label_smoothing),
        save_final=partial(save_final_model, lm, tokenizer),
        on_step=on_step,
    )
    return run_training(config, task, run_dir)
