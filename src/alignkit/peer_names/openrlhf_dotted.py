"""OpenRLHF's grouped command-line names (its current ``--ckpt.output_dir``, ``--train.batch_size``,
``--data.dataset``, ``--actor.adam.lr`` ... spelling) as the flat names :mod:`.others` reads
(``save_path``, ``train_batch_size``, ``dataset``, ``actor_learning_rate`` ...), and the few grouped
names that have no flat one, converted here."""

from __future__ import annotations

from typing import Any, Callable

from alignkit.errors import ConfigError
from alignkit.peer_names.values import only, to

PLACEMENT_KEYS = ("num_nodes", "num_gpus_per_node")
SAMPLING = "rollouts are sampled in-process by the policy itself (no vLLM engine, nothing to correct for)"

# grouped name -> OpenRLHF's flat name (converted by others.OPENRLHF / DROPPED / NEVER) or ours
RENAMED = {
    "ckpt.output_dir": "save_path",
    "ckpt.save_steps": "save_steps",
    "ckpt.save_hf": "save_hf_ckpt",
    "ckpt.disable_ds": "disable_ds_ckpt",
    "ckpt.path": "ckpt_path",
    "ckpt.max_num": "max_ckpt_num",
    "ckpt.max_mem": "max_ckpt_mem",
    "ckpt.load_enable": "load_checkpoint",
    "logger.logging_steps": "logging_steps",
    "logger.wandb.key": "use_wandb",
    "logger.wandb.project": "wandb_project",
    "logger.wandb.org": "wandb_org",
    "logger.wandb.group": "wandb_group",
    "logger.wandb.run_name": "wandb_run_name",
    "logger.tensorboard_dir": "use_tensorboard",
    "eval.steps": "eval_steps",
    "eval.dataset": "eval_dataset",
    "train.micro_batch_size": "micro_train_batch_size",
    "train.batch_size": "train_batch_size",
    "train.max_epochs": "max_epochs",
    "train.seed": "seed",
    "train.colocate_all": "colocate_all_models",
    "train.colocate_actor_ref": "colocate_actor_ref",
    "train.colocate_critic_reward": "colocate_critic_reward",
    "model.model_name_or_path": "pretrain",
    "model.beta": "beta",
    "model.gradient_checkpointing_enable": "gradient_checkpointing",
    "model.gradient_checkpointing_reentrant": "gradient_checkpointing_use_reentrant",
    "model.nll_loss_coef": "nll_loss_coef",
    "model.label_smoothing": "label_smoothing",
    "model.ipo_enable": "ipo",
    "model.aux_loss_coef": "aux_loss_coef",
    "actor.model_name_or_path": "pretrain",
    "actor.adam.lr": "actor_learning_rate",
    "actor.gradient_checkpointing_enable": "gradient_checkpointing",
    "actor.gradient_checkpointing_reentrant": "gradient_checkpointing_use_reentrant",
    "actor.aux_loss_coef": "aux_loss_coef",
    "actor.eps_clip": "cliprange",
    "critic.adam.lr": "critic_learning_rate",
    "critic.value_clip": "cliprange_value",
    "ref.offload": "ref_offload",
    "reward.model_name_or_path": "reward_pretrain",
    "reward.normalize_enable": "normalize_reward",
    "rollout.batch_size": "rollout_batch_size",
    "rollout.n_samples_per_prompt": "n_samples_per_prompt",
    "rollout.micro_batch_size": "micro_rollout_batch_size",
    "rollout.max_new_tokens": "generate_max_len",
    "rollout.temperature": "temperature",
    "rollout.top_p": "top_p",
    "data.max_len": "max_len",
    "data.input_template": "input_template",
    "data.dataset": "dataset",
    "data.prompt_dataset": "prompt_data",
    "data.max_samples": "max_samples",
    "data.apply_chat_template": "apply_chat_template",
    "data.dataset_probs": "dataset_probs",
    "data.prompt_probs": "dataset_probs",
    "data.disable_fast_tokenizer": "disable_fast_tokenizer",
    **{f"data.{which}_key": f"{which}_key" for which in ("input", "output", "prompt", "chosen", "rejected", "label")},
    "ds.zero_stage": "zero_stage",
    "ds.packing_samples": "packing_samples",
    "ds.adam_offload": "adam_offload",
    "ds.ring_attn_size": "ring_attn_size",
    "ds.tensor_parallel_size": "ds_tensor_parallel_size",
    "ds.overlap_comm": "overlap_comm",
    "ds.deepcompile": "deepcompile",
    "ds.zpg": "zpg",
    "ds.attn_implementation": "flash_attn",
    "ds.lora.rank": "lora_rank",
    "ds.lora.alpha": "lora_alpha",
    "ds.lora.dropout": "lora_dropout",
    "ds.lora.target_modules": "target_modules",
    "ds.load_in_4bit": "load_in_4bit",
    "ds.value_head_prefix": "value_head_prefix",
    "adam.lr": "learning_rate",
    "adam.betas": "adam_betas",
    "adam.eps": "adam_epsilon",
    "adam.weight_decay": "weight_decay",
    "algo.kl.init_coef": "init_kl_coef",
    "algo.kl.target": "target_kl",
    "algo.kl.horizon": "kl_horizon",
    "algo.kl.estimator": "kl_estimator",
    "algo.advantage.lambd": "lam",
    **{f"{role}.{what}": f"{role}_{what}" for role in ("ref", "reward", "critic", "actor") for what in PLACEMENT_KEYS},
}


def _param_dtype(value: Any) -> dict:
    if str(value) not in ("bf16", "fp16", "fp32"):
        raise ConfigError(f"ds.param_dtype {value!r}: give bf16, fp16 or fp32")
    return {"mixed_precision": str(value)} if str(value) != "fp32" else {}


def _estimator(value: Any) -> dict:
    return {"_orl_estimator": str(value)}  # settled by peer_names.finish: it names the command


def _eps_clip_low_high(value: Any) -> dict:
    low, high = (
        float(v) for v in (value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split())
    )
    return {"cliprange": low} if high == low else {"cliprange": low, "cliprange_high": high}


def _remote_reward(value: Any) -> dict:
    """OpenRLHF's ``--reward.remote_url``: a ``reward_func.py`` file is a batched reward term; an HTTP
    reward server is refused."""
    if value in (None, "None", ""):
        return {}
    if not str(value).endswith(".py"):
        raise ConfigError(
            f"{value}: a remote reward server is not called; give the reward function's file (reward_func.py), "
            "or a rewards term (reward_model, python, verifier or judge)"
        )
    return {"_reward_terms:remote": [{"kind": "reward_func", "function": f"{value}:reward_func"}]}


# grouped names converted here
NAMES: dict[str, Callable[[Any], dict]] = {
    "ds.param_dtype": _param_dtype,
    "algo.advantage.estimator": _estimator,
    "actor.eps_clip_low_high": _eps_clip_low_high,
    "data.dataset_split": to("dataset_train_split"),
    "data.prompt_split": to("dataset_train_split"),
    "eval.split": to("dataset_test_split"),
    "train.num_episodes": to("num_train_epochs"),  # passes over the prompts (train.max_epochs: over each rollout)
    "algo.advantage.gamma": lambda value: {"_gamma": float(value)},  # settled by finish: PPO's GAE discount
    "data.multiturn": lambda value: {},  # every assistant turn of a conversation is trained on, either way
    "data.tokenizer_chat_template": only({None}, "the model folder's chat template is used"),
    "model.loss_type": only({"sigmoid", None}, "the reward model's loss is Bradley-Terry's -log sigmoid"),
    "model.pretrain_mode_enable": only({False}, "SFT trains on the responses only (the prompt is masked)"),
    "actor.pretrain_mode_enable": only({False}, "SFT trains on the responses only (the prompt is masked)"),
    "actor.policy_loss_type": only({"ppo", None}, "the policy loss is PPO's clipped surrogate"),
    "actor.dual_clip": only({None}, "dual clipping is not supported"),
    "actor.entropy_coef": only({None, 0, 0.0}, "no entropy bonus is added"),
    "critic.model_name_or_path": only({None}, "the value head is on the policy's backbone"),
    "ref.model_name_or_path": only({None}, "the reference is the model training starts from"),
    "reward.remote_url": _remote_reward,
    "reward.clip_range": only({None}, "rewards are not clipped"),
    "reward.overlong_penalty_factor": only({None, 0, 0.0}, "use missing_eos_penalty for cut-off completions"),
    "reward.overlong_buffer_len": only({None}, "use missing_eos_penalty for cut-off completions"),
    "reward.stop_properly_penalty_coef": only({None}, "use missing_eos_penalty for cut-off completions"),
    "train.async_enable": only({False}, "sampling and updates take turns (on-policy)"),
    "train.partial_rollout_enable": only({False}, "sampling and updates take turns (on-policy)"),
    "train.agent_func_path": only({None}, "multi-turn agent rollouts are not supported"),
    "train.enable_ema": only({False}, "no EMA of the weights is kept"),
    "algo.kl.use_loss": lambda value: {"_orl_kl_loss": bool(value)},  # settled by finish: GRPO's is in the loss
    "algo.dynamic_filtering_enable": only({False}, "every prompt's samples are trained on (no dynamic filtering)"),
    "use_ms": only({False}, "datasets are files, folders or Hugging Face hub ids"),
}
# grouped names dropped: name -> a note ("" for none)
DROPPED = {
    "ckpt.best_metric_key": "checkpoints are kept newest first (save_total_limit)",
    "ds.enable_sleep": "",
    "ds.ring_attn_head_stride": "",
    "ds.use_liger_kernel": "",
    "ds.grad_accum_dtype": "",
    "ds.use_universal_ckpt": "",
    "data.dataloader_num_workers": "",
    "data.image_key": "alignkit trains on text",
    "data.max_images_per_prompt": "alignkit trains on text",
    "actor.freeze_visual_encoder": "alignkit trains on text",
    "train.dynamic_batch_enable": "speed and memory only",
    "train.max_tokens_per_gpu": "speed and memory only",
    "train.async_queue_size": "",
    "rollout.max_tokens_per_gpu": "speed and memory only",
    "rollout.vllm_generate_batch_size": "speed and memory only",
    "reward.offload": "memory only",
    "critic.save_value_network": "the value head is saved with the policy (final/value_head.safetensors)",
    "eval.temperature": "evaluation samples at the training temperature",
    "eval.n_samples_per_prompt": "evaluation samples once per prompt",
    "algo.dynamic_filtering_range": "",
    "local_rank": "",
    "model.margin_loss_enable": "a row's margin field is subtracted in the reward model's loss whenever present",
    "model.compute_fp32_loss_enable": "",
}
BARE_FLAGS = {
    "ckpt.save_hf",
    "ckpt.disable_ds",
    "ckpt.load_enable",
    "ds.use_universal_ckpt",
    "model.gradient_checkpointing_enable",
    "model.gradient_checkpointing_reentrant",
    "model.ipo_enable",
    "model.pretrain_mode_enable",
    "model.margin_loss_enable",
    "model.compute_fp32_loss_enable",
    "actor.gradient_checkpointing_enable",
    "actor.gradient_checkpointing_reentrant",
    "actor.freeze_visual_encoder",
    "actor.pretrain_mode_enable",
    "critic.save_value_network",
    "ref.offload",
    "reward.offload",
    "reward.normalize_enable",
    "train.colocate_all",
    "train.colocate_actor_ref",
    "train.colocate_critic_reward",
    "train.async_enable",
    "train.partial_rollout_enable",
    "train.dynamic_batch_enable",
    "train.enable_ema",
    "data.apply_chat_template",
    "data.multiturn",
    "data.disable_fast_tokenizer",
    "ds.packing_samples",
    "ds.adam_offload",
    "ds.overlap_comm",
    "ds.deepcompile",
    "ds.enable_sleep",
    "ds.load_in_4bit",
    "ds.use_liger_kernel",
    "algo.kl.use_loss",
    "algo.advantage.is_correction_enable",
    "algo.dynamic_filtering_enable",
    "vllm.enforce_eager",
    "vllm.enable_sleep",
    "vllm.enable_prefix_caching",
    "vllm.sync_with_ray",
    "logger.wandb.key",
}
LIST_NAMES = {
    "adam.betas",
    "actor.eps_clip_low_high",
    "ds.lora.target_modules",
    "reward.clip_range",
    "algo.dynamic_filtering_range",
    "algo.advantage.is_correction_threshold",
}


def dropped_note(key: str) -> str | None:
    """The note for a grouped name alignkit drops, or None when it is not one (``vllm.*``, ``muon.*``,
    ``algo.advantage.is_correction_*`` are dropped whole)."""
    if key in DROPPED:
        return DROPPED[key]
    if key.startswith("vllm."):
        return SAMPLING
    if key.startswith("algo.advantage.is_correction"):
        return SAMPLING
    if key.startswith("muon."):
        return "the optimizer is AdamW (optim: adam)"
    return None


def canonical(key: str) -> str:
    """``key`` under OpenRLHF's flat name when it is a grouped name with one."""
    return RENAMED.get(key, key)


def expected_command(estimator: str) -> str | None:
    """The alignkit command that trains OpenRLHF's ``algo.advantage.estimator`` (None: none does)."""
    return {"gae": "ppo", "group_norm": "grpo", "dr_grpo": "grpo", "rloo": "rloo"}.get(estimator)
