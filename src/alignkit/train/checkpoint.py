"""Atomic checkpoints: written to a temp folder, fsynced, renamed; verified by a checksum manifest.

Layout of ``output_dir/checkpoint-<step>/``: ``trainable.safetensors`` (trainable parameters),
``optimizer.pt``, ``scheduler.pt``, ``rng_state_<rank>.pt``, ``trainer_state.json`` (transformers' layout, with
alignkit's loop state inside: ``train.run_outputs``) and
``manifest.json`` (size and sha256 of every other file). A checkpoint whose manifest does not match
is skipped, loudly, in favour of the previous good one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from alignkit.atomic import fsync_tree
from alignkit.errors import AlignkitError, RunDirError
from alignkit.hashing import sha256_file
from alignkit.models.loading import list_checkpoints
from alignkit.train.faults import check_resume
from alignkit.train.run_outputs import loop_state_of

MANIFEST = "manifest.json"


def rng_state() -> dict:
    """The RNG states (Python, NumPy, torch, CUDA) a checkpoint keeps."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the RNG states of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters (all of them in full fine-tuning, the adapters under LoRA)."""
    # clone: own storage (gathered FSDP parameters are views into a communication buffer)
    return {name: p.detach().clone().cpu() for name, p in model.named_parameters() if p.requires_grad}


def staging_dir(run_dir: Path, step: int) -> Path:
    """Where ``checkpoint-<step>`` is written before its atomic rename."""
    return run_dir / f".checkpoint-{step}.tmp"


def set_aside_dir(run_dir: Path, step: int) -> Path:
    """Where an existing ``checkpoint-<step>`` waits while a new save of the same step is renamed in."""
    return run_dir / f".checkpoint-{step}.old"


def _recover_set_aside(run_dir: Path) -> None:
    """A save killed between its two renames left the old ``checkpoint-<step>`` set aside: put it back. Every
    process of a resumed run gets here; the first to rename wins and the others find nothing left to move."""
    for aside in run_dir.glob(".checkpoint-*.old"):
        final = run_dir / aside.name[1:].removesuffix(".old")
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
            continue
        try:
            os.replace(aside, final)
        except FileNotFoundError:  # another process put it back first
            pass


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    optimizer,
    scheduler,
    trainer_state: dict,
    save_total_limit: int | None,
    staged: bool = False,
) -> Path:
    """Write ``checkpoint-<step>`` atomically and prune old ones beyond ``save_total_limit``.

    ``optimizer`` None: its state is already in the staging folder (``staged``: DeepSpeed wrote it there)."""
    final = run_dir / f"checkpoint-{step}"
    tmp = staging_dir(run_dir, step)
    if tmp.exists() and not staged:
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True, exist_ok=staged)
        save_file(weights, str(tmp / "trainable.safetensors"))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng_state_0.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": manifest}, indent=1))
        fsync_tree(tmp)
    except BaseException:  # disk full, killed by a signal, ...: no half-written checkpoint stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # the same step saved again: set the old one aside by a rename, delete it only after
        replaced = set_aside_dir(run_dir, step)
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
        os.replace(tmp, final)
        shutil.rmtree(replaced)
    else:
        os.replace(tmp, final)
    fsync_tree(run_dir, files=False)
    _prune(run_dir, save_total_limit)
    return final


def _prune(run_dir: Path, limit: int | None) -> None:
    if limit is None:
        return
    for _, path in list_checkpoints(run_dir)[:-limit]:
        shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path: Path) -> str | None:
    """None when every file matches the manifest; otherwise what is wrong."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "manifest.json is missing"
    try:
        manifest = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"manifest.json is unreadable ({exc})"
    for name, expected in manifest.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["size"] or sha256_file(file) != expected["sha256"]:
            return f"{name} is truncated or corrupt (checksum mismatch)"
    return None


def latest_good_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; corrupt newer ones are reported and skipped."""
    if run_dir.is_dir():
        _recover_set_aside(run_dir)
    for step, path in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        warnings.warn(f"checkpoint {path} is unusable ({problem}); falling back to an earlier checkpoint", stacklevel=2)
    return None


def read_trainer_state(path: Path) -> dict:
    """A checkpoint's alignkit loop state, from its ``trainer_state.json`` (transformers' layout around it)."""
    return loop_state_of(json.loads((path / "trainer_state.json").read_text()))


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore weights and optimizer (unless None: DeepSpeed restored its own), scheduler and RNG;
    returns the trainer state."""
    if model is not None:
        weights = load_file(str(path / "trainable.safetensors"))
        expected = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(weights) != expected:
            missing, extra = sorted(expected - set(weights))[:3], sorted(set(weights) - expected)[:3]
            raise RuntimeError(
                f"checkpoint {path} does not match this model (missing {missing}, "
                f"unexpected {extra}); was the config changed?"
            )
        model.load_state_dict(weights, strict=False)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng_state_0.pt", weights_only=False))
    return read_trainer_state(path)


def write_checkpoint(
    backend,
    run_dir: Path,
    step: int,
    model,
    trained,
    optimizer,
    scheduler,
    trainer_state: dict,
    save_total_limit: int | None,
) -> Path:
    """Every process calls this: sharded optimizer state (DeepSpeed, FSDP) is written by all of them, whole weights are
    gathered by all of them, and the main process alone writes, verifies and renames the checkpoint."""
    accelerator = backend.accelerator
    accelerator.wait_for_everyone()
    tmp = staging_dir(run_dir, step)
    if backend.sharded_state:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        backend.save_state(model, optimizer, tmp)
    with backend.full_weights(trained):
        weights = trainable_state(trained) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        return save_checkpoint(
            run_dir,
            step,
            weights,
            None if backend.sharded_state else optimizer,
            scheduler,
            trainer_state,
            save_total_limit,
            staged=backend.sharded_state,
        )
    return run_dir / f"checkpoint-{step}"


def restore_checkpoint(backend, path: Path, model, trained, optimizer, scheduler) -> dict:
    """Inverse of :func:`write_checkpoint`; returns the trainer state."""
    if backend.sharded_state:
        backend.load_state(model, trained, optimizer, path)
        return load_checkpoint(path, None, None, scheduler)
    return load_checkpoint(path, trained, optimizer, scheduler)


def resume_from_latest(
    backend, run_dir: Path, fingerprint: dict, force: bool, model, trained, optimizer, scheduler
) -> dict:
    """``--resume``: restore the newest good checkpoint, after checking it was written with this config
    and data (unless ``force``); returns its trainer state."""
    checkpoint = latest_good_checkpoint(run_dir)
    if checkpoint is None:
        raise RunDirError(
            f"--resume: no usable checkpoint in {run_dir}; start again without --resume (add --overwrite)"
        )
    check_resume(read_trainer_state(checkpoint).get("fingerprint"), fingerprint, checkpoint, force)
    state = restore_checkpoint(backend, checkpoint, model, trained, optimizer, scheduler)
    backend.accelerator.print(f"alignkit: resumed from {checkpoint} at step {state['global_step']}")
    return state


def checkpoint_error(exc: OSError, step: int, run_dir: Path) -> AlignkitError:
    """The error for a checkpoint that could not be written, naming the checkpoint that is still intact."""
    previous = latest_good_checkpoint(run_dir)
    kept = f"{previous.name} is intact" if previous is not None else "no earlier checkpoint exists"
    return AlignkitError(
        f"could not write checkpoint-{step} in {run_dir}: {exc.strerror or exc}; "
        f"the partial write was removed and {kept}. "
        "Free some space, then rerun with --resume"
    )
