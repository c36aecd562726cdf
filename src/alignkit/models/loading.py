"""Load any causal LM + tokenizer by name, and wrap it with LoRA when asked."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
import yaml
from peft import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    get_peft_model,
    prepare_model_for_kbit_training,
)
from peft.tuners.tuners_utils import check_target_module_exists
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
)
from transformers.utils import logging

from alignkit.atomic import atomic_path
from alignkit.configs import EMBEDDED_MODEL
from alignkit.data.tokenize import ensure_pad_token
from alignkit.errors import AlignkitError, MissingDependencyError, require
from alignkit.models.embedded import embedded_model_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def resolve_model_path(name: str) -> str:
    """'embedded' -> the cached SmolLM2 checkpoint; an alignkit run directory -> its ``final/`` model;
    any other directory or hub id is used as is."""
    if name == EMBEDDED_MODEL:
        return str(embedded_model_path())
    path = Path(name).expanduser()
    if is_checkpoint(path):
        return str(path)
    if (
        (path / "final").is_dir()
        and not (path / "config.json").is_file()
        and not (path / "adapter_config.json").is_file()
    ):
        path = path / "final"
    if path.exists() and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        checkpoints = [folder for _, folder in list_checkpoints(path) if is_checkpoint(folder)]
        if checkpoints:
            raise AlignkitError(
                f"run directory {path} has no final/ model (the run did not finish): give its newest checkpoint, "
                f"--model {checkpoints[-1]}, or finish the run with --resume true"
            )
        raise AlignkitError(
            f"model folder {path} has no config.json or adapter_config.json (expected a save_pretrained folder)"
        )
    if not path.exists() and _is_local_path(name):
        where = "" if path.is_absolute() else f" under {Path.cwd()}"
        raise AlignkitError(f"model not found: {name} (no such folder{where}; a hub id is owner/name)")
    return str(path) if path.exists() else name


def _is_local_path(name: str) -> bool:
    """A name no hub id can be: ``./x``, ``../x``, ``/x``, ``~/x`` or more than ``owner/name``."""
    return name.startswith((".", "/", "~")) or len(name.strip("/").split("/")) > 2


CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's checkpoint folders as (step, path), oldest first (by step number, not by name)."""
    found = []
    for path in run_dir.iterdir() if run_dir.is_dir() else []:
        match = CHECKPOINT_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def is_checkpoint(path: Path) -> bool:
    """A run's ``checkpoint-N/`` folder: trainable weights and training state, no config of its own."""
    return (path / "trainable.safetensors").is_file() and not (path / "config.json").is_file()


def checkpoint_run_config(folder: Path) -> dict:
    """The resolved config of the run a checkpoint belongs to (its ``config.yaml``, one folder up)."""
    config_file = folder.parent / "config.yaml"
    if not config_file.is_file():
        raise AlignkitError(f"{folder} is a checkpoint, but {config_file} (the run's config) is missing")
    return yaml.safe_load(config_file.read_text(encoding="utf-8"))


def _checkpoint_model(auto, folder: Path, dtype, options: dict):
    """A checkpoint's model: the run's base model, its LoRA adapters (merged) when the run used them, and
    the checkpoint's trained weights; the trainer's own modules (an RL value head) are left out."""
    run = checkpoint_run_config(folder)
    model = auto.from_pretrained(resolve_model_path(run["model"]), dtype=dtype, **options)
    if run.get("use_peft"):
        task = "SEQ_CLS" if auto is AutoModelForSequenceClassification else "CAUSAL_LM"
        model = apply_lora(model, run["lora_r"], run["lora_alpha"], 0.0, run["lora_target_modules"], task)
    weights = {
        key.removeprefix("lm."): value
        for key, value in load_file(str(folder / "trainable.safetensors")).items()
        if key.startswith("lm.")
    }
    unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
    if unexpected or not weights:
        raise AlignkitError(f"{folder} does not fit the run's model {run['model']} (unexpected: {unexpected[:3]})")
    if run.get("use_peft"):
        model = model.merge_and_unload()
    model.config.name_or_path = model.name_or_path = str(folder.resolve())
    return model


def quiet_transformers() -> None:
    """Keep transformers' per-file loading bars and advisory warnings out of alignkit's output."""

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer of ``name`` (a path, hub id or ``embedded``), given a pad token when it has none."""
    quiet_transformers()
    path = resolve_model_path(name)
    if is_checkpoint(Path(path)):  # a checkpoint holds no tokenizer: the run's base model's
        path = resolve_model_path(checkpoint_run_config(Path(path))["model"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise AlignkitError(f"could not load a tokenizer for model '{name}': {exc}") from None
    ensure_pad_token(tokenizer)
    return tokenizer


def gpu_only_options(attn_implementation: str = "sdpa", load_in_4bit: bool = False) -> dict:
    """from_pretrained kwargs for GPU-only options; each fails clearly where it cannot run."""
    kwargs: dict = {"attn_implementation": attn_implementation}  # trust_remote_code is added by the caller
    if attn_implementation == "flash_attention_2":
        _need_cuda("attn_implementation: flash_attention_2")
        require("flash_attn", "flash", "attn_implementation: flash_attention_2")
    if load_in_4bit:
        _need_cuda("load_in_4bit (QLoRA)")
        require("bitsandbytes", "gpu", "load_in_4bit (QLoRA)")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return kwargs


def _need_cuda(option: str) -> None:
    if not torch.cuda.is_available():
        raise MissingDependencyError(
            f"{option} needs a CUDA GPU, and none is available on this machine; remove the option to run on CPU"
        )


def load_model_and_tokenizer(
    name: str,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    load_in_4bit: bool = False,
    reward_head: bool = False,
    trust_remote_code: bool = False,
):
    """A causal LM (or, with ``reward_head``, a one-output sequence classifier: a reward model,
    whose head is freshly initialised when ``name`` is a causal LM) and its tokenizer (pad token ensured).
    ``dtype`` "auto" keeps the checkpoint's own dtype."""
    options = {**gpu_only_options(attn_implementation, load_in_4bit), "trust_remote_code": trust_remote_code}
    path = resolve_model_path(name)
    tokenizer = load_tokenizer(name, trust_remote_code)
    if reward_head:
        options["num_labels"] = 1
    auto = AutoModelForSequenceClassification if reward_head else AutoModelForCausalLM
    adapter = Path(path) / "adapter_config.json"
    try:
        if adapter.is_file():  # a LoRA run's output: its base model with the adapter merged in
            model = _merged_adapter(auto, Path(path), DTYPES[dtype], options)
        elif is_checkpoint(Path(path)):  # a run's checkpoint-N/: rebuilt from the run's config
            model = _checkpoint_model(auto, Path(path), DTYPES[dtype], options)
        else:
            model = auto.from_pretrained(path, dtype=DTYPES[dtype], **options)
    except OSError as exc:
        raise AlignkitError(f"could not load model '{name}': {exc}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _merged_adapter(auto, folder: Path, dtype, options: dict):
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise AlignkitError(f"{folder}/adapter_config.json names no base_model_name_or_path")
    if options.get("quantization_config") is not None:
        raise AlignkitError(f"{folder} is a LoRA adapter; merge it into a full model before loading it in 4-bit")
    base_path = Path(resolve_model_path(base))
    if (base_path / "adapter_config.json").is_file():  # an adapter trained on another run's adapter: merge the chain
        model = _merged_adapter(auto, base_path, dtype, options)
    else:
        model = auto.from_pretrained(str(base_path) if base_path.exists() else base, dtype=dtype, **options)
    peft_config = PeftConfig.from_pretrained(str(folder))
    peft_config.task_type = (
        None  # load the adapter's weights whatever head this model has (e.g. a reward head on an SFT adapter)
    )
    merged = PeftModel.from_pretrained(model, str(folder), config=peft_config).merge_and_unload().requires_grad_(True)
    # An adapter trained on top of this model must name this folder as its base, not the bare base
    # model: otherwise loading it later would silently drop this adapter's weights.
    merged.config.name_or_path = merged.name_or_path = str(folder.resolve())
    return merged


def apply_lora(
    model, r: int, alpha: int, dropout: float, target_modules: list[str] | str, task_type: str = "CAUSAL_LM"
):
    """Wrap ``model`` with trainable LoRA adapters; base weights are frozen (a reward model's
    ``score`` head, task_type SEQ_CLS, is trained in full and saved with the adapter)."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type=task_type)
    embeddings = embedding_layers(model)
    refused = [name for name, module in model.named_modules() if id(module) in embeddings and targeted(config, name)]
    if refused:
        raise AlignkitError(
            f"lora_target_modules {target_modules!r} selects {', '.join(refused)}: adapting the output or "
            "embedding layer is not supported (the log-prob engine reads the base output weight, so such an "
            "adapter would never train); target linear layers of the blocks, e.g. all-linear or [q_proj, v_proj]"
        )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise AlignkitError(f"lora_target_modules {target_modules!r} do not match this model: {exc}") from None


DROPOUT_ATTRIBUTES = ("attention_dropout", "attn_dropout", "dropout", "dropout_p", "dropout_rate")


def disable_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout of ``model``: ``nn.Dropout`` modules (the model's and LoRA's) and the float
    rates attention layers keep as attributes and pass to their kernel (Llama's ``attention_dropout``).
    The config is left alone, so a saved model keeps the dropout it was given."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def embedding_layers(model) -> set[int]:
    """ids of ``model``'s input embedding and output projection modules."""
    layers = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            layers.add(id(module))
    return layers


def targeted(config: LoraConfig, name: str) -> bool:
    """Whether PEFT would adapt the module ``name`` under ``config`` (a regex string is matched whole, a
    list by name suffix, "all-linear" never includes the output layer)."""
    if config.target_modules == "all-linear":
        return False
    return bool(check_target_module_exists(config, name))


def use_eos_token(model, tokenizer, token: str) -> None:
    """End responses with ``token`` (TRL's ``eos_token``): it becomes the tokenizer's eos token (so the saved
    tokenizer keeps it) and the model's generation stops at it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise AlignkitError(f"eos_token '{token}' is not a token of the model's vocabulary")
    tokenizer.eos_token = token
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = token_id


def load_policy(config, reward_head: bool = False):
    """The model to train, per the config: dtype, LoRA, gradient checkpointing, dropout."""
    model, tokenizer = load_model_and_tokenizer(
        config.model,
        config.dtype,
        config.attn_implementation,
        config.load_in_4bit,
        reward_head,
        config.trust_remote_code,
    )
    if config.eos_token:
        use_eos_token(model, tokenizer, config.eos_token)
    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.use_peft:
        model = apply_lora(
            model,
            config.lora_r,
            config.lora_alpha,
            config.lora_dropout,
            config.lora_target_modules,
            "SEQ_CLS" if reward_head else "CAUSAL_LM",
        )
    if config.disable_dropout:
        disable_dropout(model)
    return model, tokenizer


def save_final_model(model, tokenizer, path: Path) -> None:
    """save_pretrained (PEFT adapter or full model) + tokenizer, written to a temp folder then renamed."""
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
