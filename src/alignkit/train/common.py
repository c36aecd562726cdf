"""Setup every training command shares: data split, run directory, reference log-probs."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from alignkit.config import TrainConfig, save_config
from alignkit.data.records import load_train_eval
from alignkit.diagnose.doctor import preflight
from alignkit.engine.logprobs import (
    LogProbModel,
    supports_padding_free,
    supports_prefix_sharing,
)
from alignkit.engine.reference import (
    Reference,
    model_fingerprint,
    precompute_reference,
    precompute_wanted,
)
from alignkit.errors import AlignkitError
from alignkit.models.embedded import cache_dir
from alignkit.models.loading import load_policy, resolve_model_path
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


def begin_training(config: TrainConfig, load: Callable[[str], list], train_examples: list | None, eval_examples: list | None,
                   run_dir: Path | None, reward_head: bool = False):
    """Validated data (loaded from the config unless given), the model + tokenizer to train, the
    pre-flight checks (a fail stops here, before anything is written), then the prepared run directory."""
    if train_examples is None:
        train_examples, eval_examples = load_train_eval(config, load)
    if run_dir is None and is_main_process():
        check_run_dir(config.output_dir, config.overwrite, config.resume)
    torch.manual_seed(config.seed)  # fresh heads and LoRA adapters start the same way every run
    lm, tokenizer = load_policy(config, reward_head)
    if config.padding_free and not supports_padding_free(lm):
        raise AlignkitError(
            f"model '{config.model}' lets packed sequences attend to each other (its attention does not follow restarting "
            "position ids); set padding_free: false"
        )
    if config.prefix_sharing and not supports_prefix_sharing(lm):
        print(f"alignkit: note: model '{config.model}' (attention: {getattr(lm.config, '_attn_implementation', '?')}) takes no shared-prefix mask; "
               "chosen and rejected are computed as separate sequences (prefix_sharing: false)", file=sys.stderr)
        config.prefix_sharing = False
    preflight(config, train_examples, eval_examples or [], tokenizer, lm)
    run_dir = start_run(config, run_dir)
    return train_examples, eval_examples or [], run_dir, lm, tokenizer


def make_reference(config, policy: LogProbModel, collate, item_lists: list[list[dict]]) -> Reference:
    """The reference model for ``policy`` (adapters off under LoRA, else a frozen copy), or, when
    precomputing (see :func:`precompute_wanted`), values attached to every item once and cached on disk."""
    precompute = precompute_wanted(config, len(item_lists[0]), int(os.environ.get("WORLD_SIZE", "1")))
    reference = Reference(policy, use_adapter=config.use_peft, precompute_only=precompute)
    if precompute:
        fingerprint = model_fingerprint(resolve_model_path(config.model)) + f"|{config.dtype}|{type(collate).__name__}"
        started = time.perf_counter()
        computed = 0
        for items in item_lists:
            if items:
                computed += precompute_reference(reference, items, collate, config.per_device_eval_batch_size, cache_dir(), fingerprint, policy.lm.device,
                                                 not config.disable_tqdm)
        reference.release()
        if is_main_process():
            total = sum(len(items) for items in item_lists)
            how = f"computed in {time.perf_counter() - started:.1f} s" if computed else "read from the cache"
            print(f"alignkit: reference log-probs of {total} examples {how}"
                  + (f" ({total - computed} from the cache)" if 0 < computed < total else "") + "; no reference forward during training", file=sys.stderr)
    return reference
