"""Setup every training command shares: data split, run directory, reference log-probs."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from alignkit.configs import TrainConfig, save_config
from alignkit.data.methods import data_loader, tokenize_for
from alignkit.data.records import load_train_eval
from alignkit.data.tokenize import TokenizedRows
from alignkit.diagnose.doctor import preflight
from alignkit.engine.fingerprint import reference_fingerprint
from alignkit.engine.logprobs import (
    LogProbModel,
    supports_padding_free,
    supports_prefix_sharing,
    supports_segments,
)
from alignkit.engine.reference import Reference, precompute_reference, precompute_wanted
from alignkit.errors import AlignkitError
from alignkit.models.embedded import cache_dir
from alignkit.models.hub import check_hub
from alignkit.models.loading import load_policy, resolve_model_path
from alignkit.models.segment_attention import enable_segment_attention, requested_kernel, uses_segment_attention
from alignkit.train.run_dir import check_run_dir, prepare_run_dir


def is_main_process() -> bool:
    """Rank 0 of a multi-process launch (accelerate launch / torchrun set RANK), or a single process.
    Read from the environment: the process group does not exist yet when run directories are prepared."""
    return int(os.environ.get("RANK", "0")) == 0


def start_run(config: TrainConfig, run_dir: Path | None = None) -> Path:
    """Prepare the run directory (refuse / overwrite / resume) and write the resolved config. Under
    several processes only the main one touches the directory (the others write nothing there)."""
    if is_main_process():
        if run_dir is None:
            run_dir = prepare_run_dir(config.output_dir, config.overwrite, config.resume)
        save_config(config, run_dir / "config.yaml")
    return Path(run_dir or config.output_dir)


@dataclass
class PreparedRun:
    """What :func:`begin_training` hands a trainer: the validated rows, the same rows tokenized once (the
    pre-flight measured these), the model and tokenizer to train, and the run directory."""

    train_examples: list
    eval_examples: list
    train: TokenizedRows
    eval: TokenizedRows
    run_dir: Path
    lm: torch.nn.Module
    tokenizer: object

    def collator(self, collator_class, config: TrainConfig):
        """``collator_class`` (a ``SequenceCollator``) laid out as ``config`` asks, in one row where the model
        runs segment attention (``begin_training`` decided that)."""
        return collator_class(
            self.tokenizer.pad_token_id,
            config.padding_free,
            config.padding_side,
            config.prefix_sharing,
            uses_segment_attention(self.lm),
        )


def begin_training(
    config: TrainConfig,
    method: str,
    train_examples: list | None,
    eval_examples: list | None,
    run_dir: Path | None,
    reward_head: bool = False,
) -> PreparedRun:
    """Validated data (loaded from the config unless given), the model + tokenizer to train, the rows
    tokenized as ``method`` trains on them, the pre-flight checks on those tokens (a fail stops here,
    before anything is written), then the prepared run directory."""
    check_hub(config)  # a run that could not push stops now, not after training
    if train_examples is None:
        train_examples, eval_examples = load_train_eval(config, data_loader(method))
    eval_examples = eval_examples or []
    if run_dir is None and is_main_process():
        check_run_dir(config.output_dir, config.overwrite, config.resume)
    torch.manual_seed(config.seed)  # fresh heads and LoRA adapters start the same way every run
    lm, tokenizer = load_policy(config, reward_head)
    if config.padding_free and not supports_padding_free(lm):
        raise AlignkitError(
            f"model '{config.model}' lets packed sequences attend to each other "
            "(its attention does not follow restarting "
            "position ids); set padding_free: false"
        )
    if config.prefix_sharing and not supports_prefix_sharing(lm):
        print(
            f"alignkit: note: model '{config.model}' (attention: "
            f"{getattr(lm.config, '_attn_implementation', '?')}) takes no "
            "shared-prefix mask; "
            "chosen and rejected are computed as separate sequences (prefix_sharing: false)",
            file=sys.stderr,
        )
        config.prefix_sharing = False
    if config.padding_free:
        enable_segment_attention(lm, supports_segments, config.max_length)
    train = tokenize_for(method, train_examples, tokenizer, config)
    evaluation = tokenize_for(method, eval_examples, tokenizer, config)
    preflight(config, train_examples, eval_examples, tokenizer, lm, train)
    run_dir = start_run(config, run_dir)
    return PreparedRun(train_examples, eval_examples, train, evaluation, run_dir, lm, tokenizer)


def make_reference(config, policy: LogProbModel, collate, item_lists: list[list[dict]], tokenizer) -> Reference:
    """The reference model for ``policy`` (adapters off under LoRA, else a frozen copy), or, when
    precomputing (see :func:`precompute_wanted`), values attached to every item once and cached on disk.
    The pass itself waits for the training session (``reference.pending``): it runs on the accelerator's
    device, under the training's autocast, each process computing its share."""
    precompute = precompute_wanted(config, len(item_lists[0]), int(os.environ.get("WORLD_SIZE", "1")))
    reference = Reference(policy, use_adapter=config.use_peft, precompute_only=precompute)
    if precompute:
        reference.pending = partial(_precompute, config, reference, collate, item_lists, tokenizer)
    return reference


def _precompute(config, reference: Reference, collate, item_lists: list[list[dict]], tokenizer, accelerator) -> None:
    """The precomputing pass of :func:`make_reference`, on ``accelerator``'s device (after ``prepare``)."""
    model_path = resolve_model_path(config.model)
    # the values depend, at the precision's rounding, on the device's kernels and the segment-attention kernel
    layout = f"{type(collate).__name__}|{accelerator.device.type}|kernel={requested_kernel() or 'auto'}"
    fingerprint = reference_fingerprint(config, tokenizer, model_path, accelerator.mixed_precision, layout, cache_dir())
    started = time.perf_counter()
    computed = 0
    for items in item_lists:
        if items:
            computed += precompute_reference(
                reference,
                items,
                collate,
                config.per_device_eval_batch_size,
                cache_dir(),
                fingerprint,
                accelerator.device,
                not config.disable_tqdm and accelerator.is_main_process,
                (accelerator.process_index, accelerator.num_processes),
                accelerator.gather,
            )
    reference.release()
    if accelerator.is_main_process:
        total = sum(len(items) for items in item_lists)
        how = f"computed in {time.perf_counter() - started:.1f} s" if computed else "read from the cache"
        print(
            f"alignkit: reference log-probs of {total} examples {how}"
            + (f" ({total - computed} from the cache)" if 0 < computed < total else "")
            + "; no reference forward during training",
            file=sys.stderr,
        )
