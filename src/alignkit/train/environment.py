"""What a bug report needs (as ``trl env``): versions, devices, bf16 support; printed by ``alignkit env`` and
kept in every run directory (``environment.json``)."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

import torch

from alignkit import __version__
from alignkit.train.backends import cpu_bf16_flags

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "safetensors",
    "pydantic",
    "trl",
    "bitsandbytes",
    "flash-attn",
    "deepspeed",
    "wandb",
)


def environment() -> dict[str, str]:
    """Versions, devices and bf16 support of this machine, as label -> value."""
    info = {
        "alignkit": __version__,
        "Python": sys.version.split()[0],
        "Platform": platform.platform(),
    }
    for name in PACKAGES:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "not installed"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        memory = [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(torch.cuda.device_count())]
        info["CUDA"] = f"{torch.version.cuda} ({len(names)} device{'s' if len(names) > 1 else ''})"
        info["GPUs"] = ", ".join(f"{n} ({m:.0f} GiB)" for n, m in zip(names, memory))
        info["bf16"] = "yes (GPU)" if torch.cuda.is_bf16_supported() else "no (GPU without bf16)"
    else:
        flags = cpu_bf16_flags()
        info["CUDA"] = "not available (CPU only)"
        info["bf16"] = f"yes (CPU: {', '.join(flags)})" if flags else "no (this CPU would emulate it: use fp32)"
    info["CPU threads"] = str(torch.get_num_threads())
    return info
