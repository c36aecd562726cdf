"""TRL's CLI spellings for a run on several processes: ``alignkit dpo config.yaml --num_processes 4``
or ``--accelerate_config zero3`` relaunches the command under ``accelerate launch ... -m alignkit dpo
...``, as ``trl dpo`` does. ``--accelerate_config`` takes a config file or the name of a shipped one
(``examples/accelerate/``: TRL's preset names ``multi_gpu``, ``zero2``, ``zero3``, ``fsdp2`` and
``single_gpu`` map onto them). The other options ``accelerate launch`` takes for a machine
(``--num_machines``, ``--machine_rank``, ``--main_process_ip`` ...) pass through. A YAML config may set
them as keys, as TRL's may.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from alignkit.errors import ConfigError
from alignkit.peer_names.trl_dropped import LAUNCH_OPTIONS

SHIPPED = Path(__file__).resolve().parents[3] / "examples" / "accelerate"  # in a source checkout
# TRL's preset names (trl/accelerate_configs) -> ours; None: one process, nothing to launch
PRESETS = {
    "multi_gpu": "ddp.yaml",
    "ddp": "ddp.yaml",
    "zero2": "zero2_bf16.yaml",
    "zero3": "zero3.yaml",
    "fsdp2": "fsdp2.yaml",
    "single_gpu": None,
}
REFUSED = {
    "zero1": "ZeRO-1 is not shipped; zero2 shards the gradients as well as the optimizer states",
    "fsdp1": "FSDP1's flat parameters are not handled; use fsdp2",
}


def plan_launch(
    command: str, args: list[str], environ: Mapping[str, str], config_file: str | None = None
) -> tuple[list[str] | None, list[str]]:
    """(the argv that relaunches ``alignkit command`` under ``accelerate launch``, or None to run here;
    ``args`` without the launch options). Launch options may also be keys of ``config_file`` (TRL's
    ``num_processes: 4`` in a YAML config); the command line's win. Inside a launched process
    (``LOCAL_RANK`` set) nothing is relaunched and the launch options are dropped."""
    launch, rest = _split(args)
    launch = {**options_in_file(config_file), **launch}
    preset = launch.pop("accelerate_config", None)
    if preset is not None:
        launch.setdefault("config_file", _config_file(preset))
    if launch.get("config_file") is None:
        launch.pop("config_file", None)
    if "LOCAL_RANK" in environ or not launch:
        return None, rest
    if "config_file" not in launch and int(launch.get("num_processes", 1)) <= 1:
        return None, rest  # one process: nothing to launch
    words = [word for key, value in launch.items() for word in (f"--{key}", value)]
    if "config_file" not in launch:
        words.append("--multi_gpu")  # torchrun-style processes (gloo on CPUs, NCCL on GPUs)
    return [sys.executable, "-m", "accelerate.commands.launch", *words, "-m", "alignkit", command, *rest], rest


def options_in_file(path: str | None) -> dict[str, str]:
    """The launch options a YAML config file sets as top-level keys."""
    if not path or not Path(path).is_file():
        return {}
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return {}  # load_config reports it, with the line
    if not isinstance(values, dict):
        return {}
    return {key: str(values[key]) for key in LAUNCH_OPTIONS if values.get(key) is not None}


def _split(args: list[str]) -> tuple[dict[str, str], list[str]]:
    launch: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        key, has_value, inline = args[i].removeprefix("--").replace("-", "_").partition("=")
        if args[i].startswith("--") and key in LAUNCH_OPTIONS:
            if has_value:
                launch[key] = inline
            elif i + 1 < len(args):
                launch[key] = args[i + 1]
                i += 1
            else:
                raise ConfigError(f"--{key} needs a value")
        else:
            rest.append(args[i])
        i += 1
    return launch, rest


def _config_file(name: str) -> str | None:
    if Path(name).is_file():
        return name
    if name in REFUSED:
        raise ConfigError(f"--accelerate_config {name}: {REFUSED[name]}")
    if name not in PRESETS:
        raise ConfigError(f"--accelerate_config {name}: neither a file nor a shipped config ({', '.join(PRESETS)})")
    if PRESETS[name] is None:
        return None
    path = SHIPPED / PRESETS[name]
    if not path.is_file():
        raise ConfigError(f"--accelerate_config {name}: {path} is not here (an installed package); give a file")
    return str(path)
