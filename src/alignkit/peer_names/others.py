"""LLaMA-Factory's and OpenRLHF's names for alignkit's settings (a LLaMA-Factory training YAML, an
OpenRLHF ``train_sft``/``train_rm``/``train_dpo``/``train_kto``/``train_ppo`` command line), and
torchtune's (:mod:`.torchtune`, its nested sections read as dotted names).

Each name becomes TRL's or ours (which :mod:`.trl` then maps), is dropped with a notice, or is
refused where it would change the result and alignkit lacks it. Values that need the rest of the
config (OpenRLHF's global ``train_batch_size``, LLaMA-Factory's LoRA defaults and its ``stage``) are
passed on as private ``_keys`` that :func:`alignkit.peer_names.finish` settles after merging.
"""

from __future__ import annotations

from typing import Any, Callable

from alignkit.errors import ConfigError
from alignkit.peer_names import openrlhf_dotted, torchtune
from alignkit.peer_names.values import as_list, only, reward_model, to, truthy


def _finetuning_type(value: Any) -> dict:
    if value == "lora":
        return {"use_peft": True, "_lf_lora": True}
    if value == "full":
        return {"use_peft": False}
    raise ConfigError(f"finetuning_type '{value}': alignkit trains all weights (full) or LoRA adapters (lora)")


def _lora_target(value: Any) -> dict:
    items = as_list(value)
    return {"lora_target_modules": "all-linear" if items in (["all"], ["all-linear"]) else items}


def _lora_rank(value: Any) -> dict:
    return {"lora_r": value, "use_peft": True} if int(value) > 0 else {}  # OpenRLHF: rank 0 means no LoRA


def _pref_loss(value: Any) -> dict:
    if value in ("sigmoid", "hinge", "ipo", "simpo", "orpo"):
        return {"_pref_loss": value}  # settled by finish, so a command line's pref_loss replaces the file's
    raise ConfigError(f"pref_loss '{value}': alignkit dpo trains sigmoid, hinge, ipo or simpo (orpo: alignkit orpo)")


def _nonzero(field: str) -> Callable[[Any], dict]:
    return lambda value: {field: value} if float(value) else {}


def _quantization_bit(value: Any) -> dict:
    if value in (None, "None", "none"):
        return {}
    if int(value) == 4:
        return {"load_in_4bit": True}
    raise ConfigError(f"quantization_bit {value}: alignkit quantizes to 4 bits only (QLoRA)")


def _val_size(value: Any) -> dict:
    if 0 <= float(value) < 1:
        return {"eval_split": float(value)}
    raise ConfigError(f"val_size {value}: give a fraction below 1 (alignkit's eval_split), or an eval_data file")


def _adam_betas(value: Any) -> dict:
    betas = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    if len(betas) != 2:
        raise ConfigError(f"adam_betas {value}: give two numbers, e.g. --adam_betas 0.9 0.95")
    return {"adam_beta1": float(betas[0]), "adam_beta2": float(betas[1])}


def _field_key(which: str) -> Callable[[Any], dict]:
    """OpenRLHF's ``*_key``: where a field is found in the rows (settled into ``data_fields`` by finish)."""
    return lambda value: {f"_key_{which}": str(value)} if value not in (None, "None", "none", "") else {}


ATTENTION_NOTE = (
    "alignkit picks its attention kernel itself (FlashAttention-2's varlen kernel on a CUDA GPU when flash-attn "
    "is installed); set attn_implementation to force one"
)

LLAMA_FACTORY: dict[str, Callable[[Any], dict]] = {
    "stage": lambda value: {"_stage": str(value)},
    "dataset_dir": lambda value: {"_dataset_dir": str(value)},
    "finetuning_type": _finetuning_type,
    "lora_rank": _lora_rank,
    "lora_target": _lora_target,
    "additional_target": only({None}, "only LoRA adapters are trained with use_peft"),
    "pref_beta": to("beta"),
    "pref_loss": _pref_loss,
    "pref_ftx": _nonzero("rpo_alpha"),
    "pref_bco_weight": only({0, 0.0}, "BCO's weight is not supported"),
    "dpo_label_smoothing": _nonzero("label_smoothing"),
    "kto_chosen_weight": to("desirable_weight"),
    "kto_rejected_weight": to("undesirable_weight"),
    "cutoff_len": to("max_length"),
    "val_size": _val_size,
    "split": to("dataset_train_split"),
    "quantization_bit": _quantization_bit,
    "quantization_method": only({"bnb", "bitsandbytes", None}, "QLoRA here uses bitsandbytes"),
    "quantization_type": only({"nf4", None}, "QLoRA here uses nf4"),
    "double_quantization": only({True, None}, "QLoRA here always uses double quantisation"),
    "train_on_prompt": only({False}, "alignkit trains on the responses only (the prompt is masked)"),
    "mask_history": only({False}, "SFT trains on every assistant turn"),
    "default_system": only({None}, "put the system message in your rows"),
    "ref_model": only({None}, "the reference is the model training starts from"),
    "reward_model": reward_model,
    "ppo_epochs": to("num_ppo_epochs"),
    "ppo_target": to("target_kl"),
    "ppo_score_norm": only({False}, "scores are not normalised"),
    "ppo_whiten_rewards": only({False}, "rewards are not whitened (whiten_advantages normalises advantages)"),
    "disable_gradient_checkpointing": lambda value: {"gradient_checkpointing": not truthy(value)},
    "neat_packing": lambda value: {"packing": True} if truthy(value) else {},
    "streaming": only({False}, "datasets are read whole"),
    "resize_vocab": only({False}, "the tokenizer's vocabulary is used as it is"),
    "mix_strategy": only({"concat"}, "one training dataset is read as it is"),
    "upcast_layernorm": only({False}, "norm layers follow the run's precision"),
    "upcast_lmhead_output": only({False}, "the log-prob head follows the run's precision"),
    **dict.fromkeys(
        ["use_galore", "use_apollo", "use_badam", "use_adam_mini", "use_muon"],
        only({False}, "alignkit trains with AdamW"),
    ),
    **dict.fromkeys(
        ["use_dft_loss", "use_asft_loss", "use_eaft_loss"],
        only({False}, "SFT's loss is the cross-entropy of the assistant's tokens"),
    ),
    "pissa_init": only({False}, "LoRA adapters start from peft's default initialisation"),
    "loraplus_lr_ratio": only({None, 0, 0.0}, "LoRA's A and B train at one learning rate"),
    "mixture_of_depths": only({None}, "the model's layers are trained as they are"),
    "use_llama_pro": only({False}, "alignkit trains all weights (full) or LoRA adapters (lora)"),
    "fp8": only({False}, "fp8 training is not supported; use bf16"),
    "pure_bf16": lambda value: {"dtype": "bfloat16", "mixed_precision": "no"} if truthy(value) else {},
    "predict_with_generate": only({False}, "alignkit trains; to sample and score a model use alignkit eval"),
    "adapter_name_or_path": only({None}, "merge the adapter into its model and give that folder as the model"),
}

OPENRLHF: dict[str, Callable[[Any], dict]] = {
    "pretrain": to("model"),
    "save_path": to("output_dir"),
    "load_checkpoint": lambda value: {"_resume_if_present": True} if truthy(value) else {},
    "max_ckpt_num": to("save_total_limit"),
    "max_len": to("max_length"),
    "prompt_max_len": to("max_prompt_length"),
    "generate_max_len": to("max_new_tokens"),
    "micro_train_batch_size": to("per_device_train_batch_size"),
    "micro_eval_batch_size": to("per_device_eval_batch_size"),
    "train_batch_size": lambda value: {"_global_batch_size": int(value)},
    "max_epochs": lambda value: {"_max_epochs": int(value)},  # settled by finish: PPO's are passes over a rollout
    "lr_warmup_ratio": to("warmup_ratio"),
    "input_template": lambda value: {"_input_template": value} if value not in (None, "None", "") else {},
    "lr_scheduler": to("lr_scheduler_type"),
    "min_lr_ratio": to("min_lr_rate"),
    "l2": to("weight_decay"),
    "max_norm": to("max_grad_norm"),
    "adam_betas": _adam_betas,
    "nll_loss_coef": _nonzero("rpo_alpha"),
    "ipo": lambda value: {"loss_type": "ipo"} if truthy(value) else {},
    "aux_loss_coef": only({0, 0.0}, "mixture-of-experts router losses are not added"),
    "target_modules": _lora_target,
    **{f"{which}_key": _field_key(which) for which in ("input", "output", "prompt", "chosen", "rejected", "label")},
    "desirable_loss_weight": to("desirable_weight"),
    "undesirable_loss_weight": to("undesirable_weight"),
    "use_wandb": lambda value: {"report_to": ["wandb"]} if value not in (None, False, "", "False", "false") else {},
    "use_tensorboard": lambda value: {"report_to": ["tensorboard"]} if value else {},
    "wandb_run_name": to("run_name"),
    "packing_samples": lambda value: {"padding_free": True} if truthy(value) else {},
    "reward_pretrain": reward_model,
    "prompt_data": to("train_data"),  # train_ppo_ray's prompts
    "actor_learning_rate": to("learning_rate"),
    "rollout_batch_size": to("per_device_train_batch_size"),  # prompts per rollout (one process here)
    "critic_learning_rate": lambda value: {
        "value_learning_rate": float(value),
        "_note": "the critic is a value head on the policy's backbone: the head trains at this rate, the backbone at "
        "the actor's",
    },
    "n_samples_per_prompt": to("num_generations"),
    "init_kl_coef": lambda value: {"_init_kl_coef": float(value)},  # settled by finish: GRPO's is beta
    "ring_attn_size": only({1}, "sequence parallelism is not supported"),
    "value_head_prefix": only({"score"}, "the reward head is saved as score"),
    "normalize_reward": lambda value: {"_reward_normalize": True} if truthy(value) else {},
    "dataset_probs": only(
        {None, 1, 1.0, "1.0"}, "datasets are read whole, one after another; to weigh them, resample rows into one file"
    ),
}
# names both use alike (their attention switch, LLaMA-Factory's auto/fa2/sdpa and OpenRLHF's flag, is in DROPPED)
# (LLaMA-Factory's dataset names are looked up in dataset_dir/dataset_info.json by finish)
SHARED = {"dataset": lambda value: {"_dataset": value}, "eval_dataset": lambda value: {"_eval_dataset": value}}

# dropped: name -> a note on how alignkit does it (empty: no effect on the result)
DROPPED = {
    "flash_attn": ATTENTION_NOTE,
    "zero_stage": "sharding is chosen at launch: accelerate launch --config_file examples/accelerate/zero3.yaml "
    "-m alignkit ... (zero2_bf16.yaml for ZeRO-2; docs/distributed.md)",
    "template": "alignkit formats rows with the model's own chat template (tokenizer.chat_template)",
    "ckpt_path": "checkpoints are written to output_dir/checkpoint-N",
    "use_unsloth": "speed only; alignkit's own engine is used",
    "use_unsloth_gc": "speed only; alignkit's own engine is used",
    "wandb_project": "set WANDB_PROJECT in the environment",
    "wandb_org": "set WANDB_ENTITY in the environment",
    "wandb_group": "set WANDB_RUN_GROUP in the environment",
    "adam_offload": "memory only; use a DeepSpeed launch config with offload",
    "micro_rollout_batch_size": "speed and memory only",
    **dict.fromkeys(
        [
            f"{role}_{what}"
            for role in ("ref", "reward", "critic", "actor")
            for what in ("num_nodes", "num_gpus_per_node")
        ]
        + ["colocate_actor_ref", "colocate_critic_reward", "colocate_all_models"],
        "placement: alignkit runs the policy, reference and reward model in each training process",
    ),
    "ref_offload": "memory only; with precompute_ref_log_probs the reference is not kept during training",
    "use_v1_kernels": "speed only; alignkit's own engine is used",
    "fsdp_transformer_layer_cls_to_wrap": "FSDP is configured at launch (--accelerate_config fsdp2)",
    "ray_num_workers": "launch several processes with accelerate: alignkit sft config.yaml --num_processes N",
    **dict.fromkeys(
        [
            *(f"{kind}_{k}" for kind in ("image", "video") for k in ("max_pixels", "min_pixels")),
            *("video_fps", "video_maxlen", "freeze_vision_tower", "freeze_multi_modal_projector"),
            "freeze_language_model",
        ],
        "alignkit trains on text; image and video columns are refused where a dataset has them",
    ),
    **dict.fromkeys(
        [
            *(f"galore_{k}" for k in ("rank", "target", "scale", "layerwise", "update_interval", "proj_type")),
            *(f"apollo_{k}" for k in ("rank", "target", "scale", "scale_type", "layerwise", "update_interval")),
            *(f"badam_{k}" for k in ("mode", "switch_interval", "switch_mode", "verbose", "start_block")),
            *(f"oft_{k}" for k in ("block_size", "target", "rank")),
            *(f"pissa_{k}" for k in ("iter", "convert")),
            *(f"freeze_{k}" for k in ("trainable_layers", "trainable_modules", "extra_modules")),
            *(f"asft_{k}" for k in ("alpha",)),
            *("use_reentrant_gc", "fp8_backend", "fp8_enable_fsdp_float8_all_gather"),
        ],
        "",  # settings of a method that is off (its switch is refused when on)
    ),
    **dict.fromkeys(
        [
            "overwrite_cache",
            "preprocessing_num_workers",
            "plot_loss",
            "enable_liger_kernel",
            "cache_dir",
            "tokenized_path",
            "buffer_size",
            "print_param_status",
            "use_fast_tokenizer",
            "disable_fast_tokenizer",
            "infer_backend",
            "max_ckpt_mem",
            "save_hf_ckpt",
            "disable_ds_ckpt",
            "zpg",
            "overlap_comm",
            "deepcompile",
            "gradient_checkpointing_use_reentrant",
            "ds_tensor_parallel_size",
        ],
        "",
    ),
}
# OpenRLHF's -1 for "never": evaluation and the checkpoint then come only at the end, as alignkit does anyway
NEVER = {"eval_steps": {"eval_steps": None}, "save_steps": {"save_steps": 2**31 - 1}}
BARE_FLAGS = {
    "colocate_actor_ref",
    "colocate_critic_reward",
    "colocate_all_models",
    "flash_attn",
    "load_checkpoint",
    "ipo",
    "packing_samples",
    "adam_offload",
    "ref_offload",
    "overlap_comm",
    "deepcompile",
    "disable_fast_tokenizer",
    "save_hf_ckpt",
    "disable_ds_ckpt",
    "gradient_checkpointing_use_reentrant",
    "use_tensorboard",
    "normalize_reward",
    "neat_packing",
    "disable_gradient_checkpointing",
    "use_unsloth",
    "overwrite_cache",
    "plot_loss",
} | openrlhf_dotted.BARE_FLAGS
LIST_NAMES = {"adam_betas", "target_modules"} | openrlhf_dotted.LIST_NAMES
NAMES = {
    **{name: ("torchtune", convert) for name, convert in torchtune.NAMES.items()},
    **{name: ("OpenRLHF", convert) for name, convert in openrlhf_dotted.NAMES.items()},
    **{name: ("LLaMA-Factory", convert) for name, convert in LLAMA_FACTORY.items()},
    **{name: ("OpenRLHF", convert) for name, convert in OPENRLHF.items()},
    **{name: ("LLaMA-Factory/OpenRLHF", convert) for name, convert in SHARED.items()},
}


def dropped_note(key: str) -> str | None:
    """The note for a key LLaMA-Factory, OpenRLHF or torchtune has and alignkit drops ("": none), or None."""
    dropped = _dropped(key)
    return dropped[2] if dropped else None


def _dropped(key: str) -> tuple[str, str, str] | None:
    """(the tool, the name a notice shows, the note) for a key alignkit drops, or None. A key of a torchtune
    section dropped whole is shown as ``section.*``, so its notice comes once."""
    if key in DROPPED:
        return "LLaMA-Factory/OpenRLHF", key, DROPPED[key]
    note = openrlhf_dotted.dropped_note(key)
    if note is not None:
        return "LLaMA-Factory/OpenRLHF", key, note
    note = torchtune.dropped_note(key)
    if note is None:
        return None
    return "torchtune", key if key in torchtune.DROPPED else key.split(".", 1)[0] + ".*", note


def translate(values: dict[str, Any], known: set[str], origin: str, notices: list[str] | None) -> dict[str, Any]:
    """``values`` with LLaMA-Factory's and OpenRLHF's names turned into TRL's or ours (and private
    ``_keys`` for :func:`alignkit.peer_names.finish`); names the command has as its own are kept."""
    out: dict[str, Any] = {}
    for key, value in torchtune.flatten(values, known).items():
        key = openrlhf_dotted.canonical(key)  # OpenRLHF's grouped names (--train.batch_size) as its flat ones
        if key == "seed" and value is None:  # torchtune's seed: null (a fresh seed); alignkit keeps its own
            continue
        if key in NEVER and str(value).strip() == "-1":  # OpenRLHF's -1: never during the run (alignkit: at its end)
            out.update(NEVER[key])
        elif key in known:
            out[key] = value
        elif key in NAMES:
            tool, convert = NAMES[key]
            try:
                converted = convert(value)
            except (ConfigError, TypeError, ValueError, LookupError) as exc:
                raise ConfigError(f"{origin}: '{key}' ({tool}): {exc}") from None
            if "_note" in converted and notices is not None:  # what differs from the tool's meaning
                notices.append(f"{origin}: '{key}' ({tool}): {converted['_note']}")
            out.update({k: v for k, v in converted.items() if k != "_note"})
        elif (dropped := _dropped(key)) is not None:
            if notices is not None and value not in (None, False, "", "auto"):
                tool, named, note = dropped
                notices.append(f"{origin}: '{named}' ({tool}) ignored: {note or 'has no effect in alignkit'}")
        else:
            out[key] = value
    return out
