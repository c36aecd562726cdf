"""Other tools' names for alignkit's settings, so a config or command line written for TRL,
LLaMA-Factory, OpenRLHF or torchtune runs under alignkit as it is.

Every key of a config file or command line passes through :func:`translate` before validation:
LLaMA-Factory's, OpenRLHF's and torchtune's names become TRL's or ours (:mod:`.others`,
:mod:`.torchtune`), then TRL's become ours
(:mod:`.trl`, :mod:`.trl_dropped`). Once the file's and the command line's values are merged,
:func:`finish` settles what needs the whole config (a global batch size, a tool's defaults, which
command a config was written for).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from alignkit.errors import ConfigError
from alignkit.peer_names import llamafactory_datasets, openrlhf_dotted, others, torchtune, trl, trl_dropped
from alignkit.peer_names.values import as_list

BARE_FLAGS = trl_dropped.BARE_FLAGS | others.BARE_FLAGS
LIST_NAMES = trl.LIST_NAMES | others.LIST_NAMES
TEXT_NAMES = {"input_template", "data.input_template"}  # other tools' text settings, taken as written
# LLaMA-Factory's stage -> the alignkit command that trains it
STAGES = {"pt": "sft", "sft": "sft", "rm": "reward", "dpo": "dpo", "kto": "kto", "ppo": "ppo"}  # pt: text rows
RL_COMMANDS = ("ppo", "grpo", "rloo")
# TRL's loss_type where alignkit's command has one loss: the value that names it
SINGLE_LOSS = {"kto": "kto", "sft": "nll"}


def translate(values: dict[str, Any], known: set[str], origin: str, notices: list[str] | None = None) -> dict[str, Any]:
    """Our fields for ``values`` given under our names or another tool's (see the module docstring);
    notices for dropped keys go to ``notices``, and a key that would change the result and that alignkit
    lacks raises a ConfigError naming ``origin``."""
    return trl.translate(others.translate(values, known, origin, notices), known, origin, notices)


def interpolate(file_values: dict[str, Any], cli_values: dict[str, Any]) -> dict[str, Any]:
    """A config file's ``${name}`` references (torchtune's, OmegaConf's) resolved; see
    :func:`.torchtune.interpolate`."""
    return torchtune.interpolate(file_values, cli_values)


def knows(key: str) -> bool:
    """Whether ``key`` is another tool's name alignkit understands (torchtune's sections included)."""
    return (
        trl.knows(key)
        or key in others.NAMES
        or key in openrlhf_dotted.RENAMED
        or others.dropped_note(openrlhf_dotted.canonical(key)) is not None
        or key in torchtune.SECTIONS
    )


def all_names() -> list[str]:
    """Every other tool's name alignkit understands (for "did you mean" suggestions)."""
    return sorted(
        {
            *trl.all_names(),
            *others.NAMES,
            *others.DROPPED,
            *torchtune.DROPPED,
            *torchtune.SECTIONS,
            *openrlhf_dotted.RENAMED,
            *openrlhf_dotted.DROPPED,
        }
    )


def finish(merged: dict[str, Any], cls: type) -> dict[str, Any]:
    """``merged`` (file values under command-line ones, translated) with the private ``_keys`` that
    :mod:`.others` left settled against the whole config:

    - ``_stage`` (LLaMA-Factory's ``stage``): the config must be run by the command that trains it;
    - ``_pref_loss`` (LLaMA-Factory's ``pref_loss``): DPO's ``loss_type``, or ``orpo``: alignkit orpo;
    - ``_lf_lora`` (``finetuning_type: lora``): LLaMA-Factory's LoRA defaults where the config is silent
      (rank 8, alpha twice the rank, no dropout);
    - ``_global_batch_size`` (OpenRLHF's ``train_batch_size``, examples per optimizer step over all
      processes): becomes ``gradient_accumulation_steps`` for this launch's number of processes
      (``WORLD_SIZE``), which must divide it; for the RL commands, the sequences of each update
      (``mini_batch_size`` per process);
    - ``_total_episodes`` (TRL's PPO: prompts over the whole run): ``max_steps`` of
      ``per_device_train_batch_size`` prompts per process;
    - ``_num_mini_batches`` (TRL's PPO: minibatches per rollout batch): ``mini_batch_size``;
    - ``_sft_model_path`` (TRL's PPO: the policy and reference to start from): ``model``, whatever the
      order it came in beside ``model_name_or_path``;
    - ``_reward_terms:*`` (TRL's ``reward_funcs``, ``reward_model_path`` ...): the reward terms, after any
      ``rewards`` given;
    - ``_loss_type`` (TRL's ``loss_type`` where the command has one loss): accepted when it names it;
    - ``_resume_if_present`` (OpenRLHF's ``load_checkpoint``): ``resume`` when output_dir holds a run;
    - ``_key_*`` (OpenRLHF's ``input_key``, ``chosen_key`` ...): ``data_fields``. An SFT ``input_key``
      without an ``output_key`` holds a conversation (with the chat template) or plain text;
    - ``_dataset``/``_eval_dataset`` (``dataset``, ``eval_dataset``), with LLaMA-Factory's ``_dataset_dir``:
      ``train_data``/``eval_data``, a name in ``dataset_dir/dataset_info.json`` read as its file and
      columns, anything else as a file, folder or hub id (a comma list: one after another);
    - OpenRLHF's ``_max_epochs`` (PPO: passes over each rollout batch, else epochs), ``_input_template``
      (``prompt_template`` unless the chat template is applied), ``_reward_normalize`` (the reward-model
      terms'), and through :func:`_settle_estimator` ``_orl_estimator`` and ``_orl_kl_loss`` (which
      command trains it, and where its KL penalty goes), ``_init_kl_coef`` (GRPO's ``beta``, else
      ``kl_coef``) and ``_gamma`` (PPO's discount; the group methods take 1.0 only).
    """
    out = {key: value for key, value in merged.items() if not key.startswith("_")}
    command = getattr(cls, "command", None)  # the alignkit command cls is for (None: not a training command)
    stage, orpo = merged.get("_stage"), merged.get("_pref_loss") == "orpo"
    if merged.get("_pref_loss") not in (None, "orpo") and command == "dpo":
        out.setdefault("loss_type", merged["_pref_loss"])  # an explicit loss_type wins
    if stage is not None and command is not None:
        if stage not in STAGES:
            raise ConfigError(
                f"LLaMA-Factory stage '{stage}' has no alignkit command (stages: {', '.join(STAGES)}; pref_loss "
                "orpo under stage dpo is alignkit orpo)"
            )
        wanted = "orpo" if stage == "dpo" and orpo else STAGES[stage]
        if wanted != command:
            raise ConfigError(f"this config is for LLaMA-Factory's stage '{stage}': run it with alignkit {wanted}")
    if "_loss_type" in merged and merged["_loss_type"] != SINGLE_LOSS.get(command):
        one = SINGLE_LOSS.get(command)
        raise ConfigError(
            f"loss_type '{merged['_loss_type']}': alignkit {command} trains one loss"
            + (f" ({one}, TRL's default)" if one else " and has no loss_type")
        )
    if merged.get("_lf_lora"):
        out.setdefault("lora_r", 8)
        out.setdefault("lora_alpha", 2 * int(out["lora_r"]))
        out.setdefault("lora_dropout", 0.0)
    if "_global_batch_size" in merged and command in RL_COMMANDS:  # OpenRLHF's PPO: sequences per update
        out["mini_batch_size"] = max(1, merged["_global_batch_size"] // _processes())
    elif "_global_batch_size" in merged:
        micro = _setting(out, cls, "per_device_train_batch_size")
        out["gradient_accumulation_steps"] = _accumulation(merged["_global_batch_size"], micro)
    if merged.get("_resume_if_present"):
        run = Path(out.get("output_dir", cls.model_fields["output_dir"].default))
        out["resume"] = run.is_dir() and any(run.iterdir())
    fields = _datasets(merged, out)
    fields.update(_data_fields(merged, command, out.get("apply_chat_template", True)))
    if fields:
        out["data_fields"] = {**fields, **(out.get("data_fields") or {})}
    terms = [term for key, value in merged.items() if key.startswith("_reward_terms:") for term in value]
    if terms:
        out["rewards"] = [*(out.get("rewards") or []), *terms]
    if merged.get("_reward_normalize"):  # OpenRLHF's normalize_reward: a reward model's stored mean and std
        for term in out.get("rewards") or []:  # (a reward function's scores are its own)
            if isinstance(term, dict) and term.get("kind") == "reward_model":
                term.setdefault("normalize", True)
    if "_input_template" in merged and not out.get("apply_chat_template"):  # OpenRLHF: the chat template wins
        out.setdefault("prompt_template", str(merged["_input_template"]))
        out["apply_chat_template"] = False
    if "_max_epochs" in merged:  # OpenRLHF's max_epochs: PPO's passes over each rollout batch, else epochs
        out.setdefault("num_ppo_epochs" if command in RL_COMMANDS else "num_train_epochs", merged["_max_epochs"])
    _settle_estimator(merged, command, out)
    torchtune.finish(merged, out)
    if merged.get("_sft_model_path"):
        out["model"] = merged["_sft_model_path"]
    if "_total_episodes" in merged:
        out["max_steps"] = max(
            1, math.ceil(merged["_total_episodes"] / (_setting(out, cls, "per_device_train_batch_size") * _processes()))
        )
    if "_num_mini_batches" in merged:
        rollouts = _setting(out, cls, "per_device_train_batch_size") * _setting(out, cls, "num_generations")
        out["mini_batch_size"] = max(1, math.ceil(rollouts / merged["_num_mini_batches"]))
    return out


def _datasets(merged: dict[str, Any], out: dict[str, Any]) -> dict[str, str]:
    """``train_data``/``eval_data`` from ``dataset``/``eval_dataset`` (where not given as such); the
    data_fields a LLaMA-Factory dataset_info.json entry gives for them."""
    fields: dict[str, str] = {}
    for key, field in (("_dataset", "train_data"), ("_eval_dataset", "eval_data")):
        if merged.get(key) in (None, "", "None", "none"):
            continue
        sources = []
        for name in as_list(merged[key]):  # several: read one after another (LLaMA-Factory's mix_strategy concat)
            source, entry_fields = llamafactory_datasets.find_dataset(name, merged.get("_dataset_dir")) or (name, {})
            if any(fields.get(ours, theirs) != theirs for ours, theirs in entry_fields.items()):
                raise ConfigError(
                    f"{key[1:]} '{name}': its columns differ from another dataset's ({entry_fields} against "
                    f"{fields}); give datasets whose fields agree, or convert them into one file"
                )
            fields.update(entry_fields)
            sources.append(source)
        if field not in out:
            out[field] = ",".join(sources)
    if merged.get("_stage") == "pt" and "instruction" in fields:  # pre-training: the prompt column is the text
        fields["text"] = fields.pop("instruction")
    return {ours: yours for ours, yours in fields.items() if ours != yours}


def _settle_estimator(merged: dict[str, Any], command: str | None, out: dict[str, Any]) -> None:
    """OpenRLHF's ``algo.advantage.estimator`` names the alignkit command that trains it, and its
    ``algo.kl.use_loss`` must put the KL penalty where that command has it."""
    if command is None:
        return
    estimator = merged.get("_orl_estimator")
    wanted = openrlhf_dotted.expected_command(estimator) if estimator is not None else command
    if wanted is None:
        raise ConfigError(
            f"algo.advantage.estimator '{estimator}': alignkit trains gae (alignkit ppo), group_norm or dr_grpo "
            "(alignkit grpo) and rloo (alignkit rloo)"
        )
    if wanted != command:
        raise ConfigError(f"algo.advantage.estimator '{estimator}' is alignkit {wanted}: run it with alignkit {wanted}")
    kl_in_loss = merged.get("_orl_kl_loss")
    if kl_in_loss is not None and kl_in_loss != (command == "grpo"):
        where = "in the loss (beta)" if command == "grpo" else "in the reward (kl_coef)"
        raise ConfigError(f"algo.kl.use_loss {kl_in_loss}: alignkit {command} puts the KL penalty {where}")
    if "_gamma" in merged and command == "ppo":
        out.setdefault("gamma", merged["_gamma"])
    elif merged.get("_gamma", 1.0) != 1.0:
        raise ConfigError(f"algo.advantage.gamma {merged['_gamma']}: alignkit {command} scores whole responses (1.0)")
    if "_init_kl_coef" in merged:  # OpenRLHF's KL weight: GRPO's beta (in the loss), the others' kl_coef
        out.setdefault("beta" if command == "grpo" else "kl_coef", merged["_init_kl_coef"])
    if estimator == "dr_grpo":
        out.setdefault("loss_type", "dr_grpo")
        out.setdefault("scale_rewards", False)


def _data_fields(merged: dict[str, Any], command: str | None, chat_template: bool) -> dict[str, str]:
    keys = {key.removeprefix("_key_"): value for key, value in merged.items() if key.startswith("_key_")}
    ours = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "label": "label", "output": "completion"}
    fields = {ours[which]: value for which, value in keys.items() if which in ours}
    if "input" in keys:
        whole = command == "sft" and "output" not in keys
        fields["messages" if whole and chat_template else "text" if whole else "prompt"] = keys["input"]
    return {field: yours for field, yours in fields.items() if field != yours}


def _setting(values: dict[str, Any], cls: type, name: str) -> int:
    """``name``'s value as given, else the command's default; a command without it cannot take the key."""
    if name in values:
        return int(values[name])
    if name not in cls.model_fields:
        command = getattr(cls, "command", None) or cls.__name__
        raise ConfigError(f"a key given needs {name}, which alignkit {command} lacks")
    return int(cls.model_fields[name].default)


def _processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _accumulation(global_batch: int, micro: int) -> int:
    processes = _processes()
    steps, left = divmod(global_batch, micro * processes)
    if left or not steps:
        raise ConfigError(
            f"train_batch_size {global_batch} (OpenRLHF: examples per step over all processes) is not a multiple of "
            f"micro_train_batch_size {micro} x {processes} process(es)"
        )
    return steps
