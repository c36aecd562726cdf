"""torchtune's recipe configs (``tune run lora_dpo_single_device --config ...`` and the like) as
alignkit settings: their nested sections (``model:``, ``optimizer:``, ``loss:`` ...) are read as dotted
names (``optimizer.lr``), which is also how torchtune's ``key=value`` overrides spell them.

The weights come from ``checkpointer.checkpoint_dir`` (a Hugging Face folder, torchtune's
``FullModelHFCheckpointer``); the tokenizer and the architecture come with it, so the ``_component_``
entries that build them are dropped with a notice. Its dataset builders (``dataset._component_``) are
read as the rows they build: the generic ones (``preference_dataset``, ``instruct_dataset``,
``chat_dataset``, ``text_completion_dataset``) from ``source``/``data_files`` with their ``column_map``,
the named ones from the hub id each reads.
"""

from __future__ import annotations

from typing import Any, Callable

from alignkit.errors import ConfigError
from alignkit.peer_names.values import only, to

# the nested sections of a torchtune config
SECTIONS = {"model", "tokenizer", "checkpointer", "dataset", "optimizer", "lr_scheduler", "loss", "metric_logger"}
# torchtune's names of the attention projections -> the Hugging Face module names LoRA adapts
ATTENTION = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
LOSSES = {"DPOLoss": "sigmoid", "RSOLoss": "hinge", "IPOLoss": "ipo", "SimPOLoss": "simpo"}


def _model(component: Any) -> dict:
    return {"use_peft": True} if "lora_" in str(component).rsplit(".", 1)[-1] else {}


def _optimizer(component: Any) -> dict:
    if str(component).rsplit(".", 1)[-1] not in ("AdamW", "Adam"):
        raise ConfigError(f"optimizer {component}: alignkit trains with torch AdamW")
    return {}


def _scheduler(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    for kind in ("cosine", "linear", "constant"):
        if kind in name:
            return {"lr_scheduler_type": kind if kind != "constant" else "constant_with_warmup"}
    raise ConfigError(f"lr_scheduler {component}: alignkit's schedules are linear, cosine or constant (with warm-up)")


def _loss(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    if name in LOSSES:
        return {"loss_type": LOSSES[name]}
    if "CrossEntropy" in name or name.startswith("CE"):  # the fine-tuning recipes' loss: alignkit sft's
        return {}
    raise ConfigError(
        f"loss {component}: alignkit dpo trains {', '.join(LOSSES)} (as sigmoid, hinge, ipo, simpo); sft the "
        "cross-entropy losses"
    )


# torchtune's dataset builders -> the hub id a named one reads, and the fields ({ours: its column}) it reads
BUILDERS: dict[str, tuple[str | None, dict[str, str]]] = {
    "preference_dataset": (None, {}),  # chosen/rejected conversations: the shared turns are the prompt
    "instruct_dataset": (None, {"prompt": "input", "completion": "output"}),
    "chat_dataset": (None, {}),  # the conversation column, by conversation_style
    "text_completion_dataset": (None, {}),  # the text column
    "hh_rlhf_helpful_dataset": ("RLHFlow/HH-RLHF-Helpful-standard", {}),
    "slimorca_dataset": ("Open-Orca/SlimOrca-Dedup", {}),  # sharegpt conversations
    "alpaca_dataset": ("tatsu-lab/alpaca", {}),  # alpaca rows: instruction and input joined, then the chat template
    "alpaca_cleaned_dataset": ("yahma/alpaca-cleaned", {}),
}
# a builder's own column names (the keys of its column_map) -> ours
COLUMN_NAMES = {
    "prompt": "prompt",
    "chosen": "chosen",
    "rejected": "rejected",
    "input": "prompt",
    "output": "completion",
}


def _dataset_builder(component: Any) -> dict:
    name = str(component).rsplit(".", 1)[-1]
    if name not in BUILDERS:
        raise ConfigError(
            f"dataset {component}: alignkit reads torchtune's {', '.join(BUILDERS)}; for another, save its rows to "
            "a file and give it as a preference_dataset/instruct_dataset/chat_dataset's data_files"
        )
    source, fields = BUILDERS[name]
    defaults = {f"_tt_default:{ours}": column for ours, column in fields.items()}  # column_map's win
    return {**({"_tt_source": source} if source else {}), **defaults}


def _column_map(value: Any) -> dict:
    if not isinstance(value, dict) or not all(key in COLUMN_NAMES for key in value):
        raise ConfigError(f"column_map {value!r}: give {{column: your column}} for {', '.join(COLUMN_NAMES)}")
    return {f"_tt_field:{COLUMN_NAMES[key]}": str(column) for key, column in value.items()}


def _conversation_style(value: Any) -> dict:
    if value not in ("sharegpt", "openai"):
        raise ConfigError(f"conversation_style {value!r}: alignkit reads sharegpt and openai conversations")
    return {"_tt_style": value}


def _dataset_source(value: Any) -> dict:
    return {} if str(value) in ("json", "parquet", "csv", "text") else {"train_data": value}  # a hub id


NAMES: dict[str, Callable[[Any], dict]] = {
    "model._component_": _model,
    "model.lora_rank": to("lora_r"),
    "model.lora_alpha": to("lora_alpha"),
    "model.lora_dropout": to("lora_dropout"),
    "model.lora_attn_modules": lambda value: {"_tt_attention": list(value)},
    "model.apply_lora_to_mlp": lambda value: {"_tt_mlp": bool(value)},
    "model.apply_lora_to_output": only({False, None}, "LoRA on the output layer is refused (use_peft adapts the body)"),
    "tokenizer.max_seq_len": to("max_length"),
    "checkpointer.checkpoint_dir": to("model"),
    "dataset.data_files": to("train_data"),
    "dataset.source": _dataset_source,
    "dataset.split": to("dataset_train_split"),
    "dataset._component_": _dataset_builder,
    "dataset.column_map": _column_map,
    "dataset.conversation_column": lambda value: {"_tt_conversations": str(value)},
    "dataset.conversation_style": _conversation_style,
    "dataset.column": lambda value: {"_tt_field:text": str(value)},  # text_completion_dataset's
    "dataset.train_on_input": only({False}, "alignkit trains on the responses only (the prompt is masked)"),
    "dataset.new_system_prompt": only({None}, "put the system message in your rows"),
    "batch_size": to("per_device_train_batch_size"),
    "epochs": to("num_train_epochs"),
    "optimizer._component_": _optimizer,
    "optimizer.lr": to("learning_rate"),
    "optimizer.weight_decay": to("weight_decay"),
    "optimizer.betas": lambda value: {"adam_beta1": float(value[0]), "adam_beta2": float(value[1])},
    "optimizer.eps": to("adam_epsilon"),
    "lr_scheduler._component_": _scheduler,
    "lr_scheduler.num_warmup_steps": to("warmup_steps"),
    "loss._component_": _loss,
    "loss.beta": to("beta"),
    "loss.label_smoothing": lambda value: {"label_smoothing": value} if value else {},
    "loss.gamma": to("simpo_gamma"),
    "log_every_n_steps": to("logging_steps"),
    "enable_activation_checkpointing": to("gradient_checkpointing"),
    "shuffle": only({True, None}, "alignkit shuffles the training data every epoch (seeded)"),
}
DROPPED = {
    "tokenizer._component_": "the tokenizer is the model folder's",
    "tokenizer.path": "the tokenizer is the model folder's",
    **dict.fromkeys(
        [
            "checkpointer._component_",
            "checkpointer.checkpoint_files",
            "checkpointer.recipe_checkpoint",
            "checkpointer.output_dir",
            "checkpointer.model_type",
            "checkpointer.adapter_checkpoint",
            "save_adapter_weights_only",
            "optimizer.fused",
            "compile",
            "metric_logger._component_",
            "metric_logger.log_dir",
            "metric_logger.project",
            "log_peak_memory_stats",
            "device",
            "enable_activation_offloading",
            "optimizer_in_bwd",
            "clip_grad_norm",
            "profiler",
            "dataset.packed",
        ],
        "",
    ),
}


def flatten(values: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """torchtune's nested sections as dotted names (a section alignkit has a field of its own name for,
    such as ``model``, is flattened only when it is a mapping)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict) and (key not in known or key == "model"):
            out.update({f"{key}.{sub}": item for sub, item in value.items()})
        else:
            out[key] = value
    return out


def finish(merged: dict[str, Any], out: dict[str, Any]) -> None:
    """LoRA's modules from torchtune's attention list and MLP switch (``max_steps_per_epoch`` is ours too);
    the data a dataset builder reads (its hub id where no source is given, its columns as data_fields)."""
    if "_tt_source" in merged:
        out.setdefault("train_data", merged["_tt_source"])
    fields = {key.split(":", 1)[1]: value for key, value in merged.items() if key.startswith("_tt_default:")}
    fields.update({key.split(":", 1)[1]: value for key, value in merged.items() if key.startswith("_tt_field:")})
    if "_tt_conversations" in merged:  # chat_dataset: openai's messages, or sharegpt's from/value turns
        fields["conversations" if merged.get("_tt_style") == "sharegpt" else "messages"] = merged["_tt_conversations"]
    fields = {ours: theirs for ours, theirs in fields.items() if ours != theirs}
    if fields:
        out["data_fields"] = {**fields, **(out.get("data_fields") or {})}
    if "_tt_attention" in merged or merged.get("_tt_mlp"):
        modules = [ATTENTION.get(name, name) for name in merged.get("_tt_attention", [])]
        out["lora_target_modules"] = modules + (["gate_proj", "up_proj", "down_proj"] if merged.get("_tt_mlp") else [])
