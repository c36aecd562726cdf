"""What a model's precomputed reference values depend on, as one string (the reference cache's key).

A folder is identified by the content of every file in it (weights, config, tokenizer files, chat
template): each file is hashed once, streamed, and its hash kept in ``$ALIGNKIT_CACHE/file_hashes.json``
under its path, inode, size and nanosecond mtime and ctime, so a rerun reads the hash instead of the
file and a file rewritten in place (same size, even its mtime restored) is hashed again. An adapter folder adds the
fingerprint of the base model it merges onto (recursively); a hub id the commit of its local snapshot
when one is cached (a new upstream revision is a new key), else its name.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

from huggingface_hub import snapshot_download

from alignkit.atomic import atomic_path
from alignkit.hashing import sha256_file


def _hash_store(cache: Path) -> Path:
    return cache / "file_hashes.json"


def file_digest(path: Path, cache: Path) -> str:
    """sha256 of ``path``'s bytes, read from the hash store while its inode, size, mtime and ctime (ns) are
    unchanged: ctime moves on every write and cannot be set back, so even a rewrite that restores the mtime
    is hashed again."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
    store_path = _hash_store(cache)
    try:
        store = json.loads(store_path.read_text())
    except (OSError, ValueError):
        store = {}
    if key not in store:
        store[key] = sha256_file(path)
        with atomic_path(store_path) as tmp:
            tmp.write_text(json.dumps(store))
    return store[key]


def hub_snapshot(name: str) -> Path | None:
    """The local snapshot folder of hub id ``name`` (its path holds the commit), if one is cached."""
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 -- not a hub id, not cached, or no huggingface_hub: the name is all there is
        return None


def model_fingerprint(model_path: str, cache: Path) -> str:
    """Identity of the model at ``model_path`` (a folder or a hub id), by content; see the module docstring."""
    path = Path(model_path)
    if not path.is_dir():
        snapshot = hub_snapshot(model_path)
        if snapshot is None:
            return f"hub:{model_path}"
        return f"hub:{model_path}@{snapshot.name}|" + model_fingerprint(str(snapshot), cache)
    parts = [
        f"{file.name}:{file_digest(file, cache)}"
        for file in sorted(path.iterdir())
        if file.is_file() and not file.name.startswith(".")
    ]
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base:
            parts.append("base=" + model_fingerprint(base, cache))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


COMPUTING_PACKAGES = ("engine", "models")  # alignkit's code that turns token ids into log-probs


@functools.lru_cache(maxsize=None)
def code_digest(
    root: Path = Path(__file__).resolve().parents[1], packages: tuple[str, ...] = COMPUTING_PACKAGES
) -> str:
    """The code reference values come from: alignkit's log-prob engine and model patches (``root``'s
    ``packages``, by content) and the versions of torch, transformers and peft. A fix or an
    upgrade there is a new key, so no value computed by other code is ever reused."""
    versions = "|".join(f"{name}={version(name)}" for name in ("torch", "transformers", "peft"))
    digest = hashlib.sha256(versions.encode())
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            digest.update(f"{file.relative_to(root).as_posix()}:".encode() + file.read_bytes())
    return digest.hexdigest()[:16]


TOKENIZATION_KEYS = ("max_length", "max_prompt_length", "apply_chat_template", "truncation_mode", "dataset_text_field")


def reference_fingerprint(config, tokenizer, model_path: str, precision: str, layout: str, cache: Path) -> str:
    """The key part shared by every item of a reference pass: the model by content, its tokenizer's chat
    template, every tokenization setting, the weights' dtype, the training's precision, the batch layout and the code
    that computes the values (:func:`code_digest`)."""
    settings = {key: getattr(config, key) for key in TOKENIZATION_KEYS if hasattr(config, key)}
    template = getattr(tokenizer, "chat_template", None) or ""
    return "|".join(
        [
            model_fingerprint(model_path, cache),
            "template=" + hashlib.sha256(str(template).encode()).hexdigest()[:16],
            "tokenizer=" + type(tokenizer).__name__ + f":{len(tokenizer)}",
            "tokenization=" + json.dumps(settings, sort_keys=True),
            f"{config.dtype}|{precision}|{layout}",
            "code=" + code_digest(),
        ]
    )
