"""``alignkit <command> [config.yaml] [--key value ...]``: a thin layer over the Python API.

Each command is a config class plus the API function that runs it; the CLI only parses,
validates and reports errors (exit status 2 for bad input, 1 for other failures).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass

from alignkit import __version__
from alignkit.commands.launch import plan_launch
from alignkit.configs import describe_fields, load_config
from alignkit.errors import AlignkitError


@dataclass(frozen=True)
class Command:
    """A CLI command: its config class, the function that runs it, and its line in the usage text."""

    config: str  # "module:ClassName"
    runner: str  # "module:function", called with the validated config
    summary: str
    usage: str = "[config.yaml] [--key value ...]"  # what follows the command's name


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "alignkit.configs:DemoConfig",
        "alignkit.commands.demo.run:run_demo",
        "DPO on the embedded model: held-out before/after, capability probes "
        "and a verdict (about 8 minutes on a 2-core CPU).",
    ),
    "sft": Command(
        "alignkit.configs:SFTConfig",
        "alignkit.train.sft:train_sft",
        "Supervised fine-tuning on messages or prompt/completion rows (loss on assistant tokens).",
    ),
    "reward": Command(
        "alignkit.configs:RewardConfig",
        "alignkit.train.reward:train_reward",
        "Train a Bradley-Terry reward model on prompt/chosen/rejected pairs.",
    ),
    "score": Command(
        "alignkit.configs:ScoreConfig",
        "alignkit.commands.score:score_pairs",
        "Score pairs with a reward model; report pairwise accuracy.",
    ),
    "dpo": Command(
        "alignkit.configs:DPOConfig",
        "alignkit.train.dpo:train_dpo",
        "DPO family on pairs: --loss_type sigmoid|robust|hinge|ipo|simpo (+ --rpo_alpha).",
    ),
    "kto": Command(
        "alignkit.configs:KTOConfig",
        "alignkit.train.kto:train_kto",
        "KTO on unpaired prompt/completion/label rows (or pairs).",
    ),
    "orpo": Command(
        "alignkit.configs:ORPOConfig",
        "alignkit.train.orpo:train_orpo",
        "ORPO: one-stage SFT + odds-ratio preference, no reference model.",
    ),
    "ppo": Command(
        "alignkit.configs:PPOConfig",
        "alignkit.train.ppo:train_ppo",
        "PPO-RLHF on prompts: value head, per-token KL penalty, GAE, clipped "
        "losses; rewards from verifiers, heuristics, a reward model or a judge.",
    ),
    "grpo": Command(
        "alignkit.configs:GRPOConfig",
        "alignkit.train.grpo:train_grpo",
        "GRPO: k completions per prompt, group-normalised advantages, KL to the reference in the loss.",
    ),
    "rloo": Command(
        "alignkit.configs:RLOOConfig",
        "alignkit.train.grpo:train_rloo",
        "RLOO: k completions per prompt, leave-one-out baseline, KL penalty in the reward.",
    ),
    "pairs": Command(
        "alignkit.configs:PairsConfig",
        "alignkit.commands.pairs:build_pairs",
        "Build preference pairs: good vs bad system prompt, or samples ranked "
        "by a verifier, heuristic, reward model or judge.",
    ),
    "annotate": Command(
        "alignkit.configs:AnnotateConfig",
        "alignkit.commands.annotate:annotate",
        "Label (prompt, A, B) rows with a position-swapped LLM judge, or export/import a blind sheet for people.",
    ),
    "doctor": Command(
        "alignkit.configs:DPOConfig",
        "alignkit.diagnose.doctor:doctor_cli",
        "Pre-flight checks of a training config (--method "
        "dpo|kto|orpo|sft|reward|ppo|grpo|rloo): data, template, model, hyper-parameters.",
        "[config.yaml] [--method dpo|kto|orpo|sft|reward|ppo|grpo|rloo] [--key value ...]",
    ),
    "eval": Command(
        "alignkit.configs:EvalConfig",
        "alignkit.evaluate.run:evaluate_model",
        "Win-rate vs the reference (judge, position-swapped, 95% CI), held-out "
        "reward accuracy, capability probes, inspection sheet.",
    ),
    "sweep": Command(
        "alignkit.configs:SweepConfig",
        "alignkit.evaluate.sweep:run_sweep",
        "One DPO run per --beta value (reference log-probs reused), each evaluated; recommends a beta.",
    ),
    "report": Command(
        "alignkit.configs:ReportConfig",
        "alignkit.report.build:build_report",
        "Self-contained HTML report + markdown summary of run / eval / sweep directories.",
        "RUN_DIR [RUN_DIR ...] [--key value ...]",
    ),
    "serve": Command(
        "alignkit.configs:ServeConfig",
        "alignkit.commands.serve:serve",
        "OpenAI-compatible endpoint (/v1/chat/completions) over a local model or run directory.",
    ),
    "label": Command(
        "alignkit.configs:LabelConfig",
        "alignkit.commands.label.run:run_label",
        "Web app where people compare answers blind: label [init|add-annotator|stats|export] PROJECT_DIR.",
        "[init|add-annotator|serve|stats|export] PROJECT_DIR [NAME] [--key value ...]",
    ),
    "env": Command(
        "alignkit.configs:EnvConfig",
        "alignkit.commands.env:print_env",
        "Versions, devices and bf16 support, to paste into a bug report.",
        "",
    ),
}
LABEL_ACTIONS = ("init", "add-annotator", "serve", "stats", "export")

USAGE = """usage: alignkit <command> [config.yaml] [--key value ...]

Every config key can be given in the YAML file or as a flag (flags win).
TRL's names work too (--model_name_or_path, --dataset_name, --bf16, --config file.yaml ...).
Run 'alignkit <command> --help' to list a command's keys.

commands:
{commands}
"""


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    """Run ``alignkit`` with ``argv`` (default: the process's arguments); returns the exit status."""
    code = _main(argv)
    _leave_process_group(code)
    return code


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE.format(commands="\n".join(f"  {name:<9} {c.summary}" for name, c in COMMANDS.items())))
        return 0
    if args[0] in ("-V", "--version"):
        print(f"alignkit {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"alignkit: unknown command '{name}'. Commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    config_cls = _load(command.config)
    if name == "doctor":  # checks the config of a training command: --method picks which (default dpo)
        method, rest = _pop_option(rest, "--method", "dpo")
        if method not in TRAINING_COMMANDS:
            print(
                f"alignkit doctor: --method must be one of {', '.join(TRAINING_COMMANDS)}, got '{method}'",
                file=sys.stderr,
            )
            return 2
        config_cls = _load(COMMANDS[method].config)
    if "-h" in rest or "--help" in rest:
        keys = describe_fields(config_cls)
        if name == "doctor":
            keys = f"(the keys of the config it checks: {method}'s; --method picks another)\n{keys}"
        print(
            f"usage: alignkit {name} {command.usage}".rstrip()
            + f"\n\n{command.summary}"
            + (f"\n\n{keys}" if keys else "")
        )
        return 0
    if name in TRAINING_COMMANDS:  # --num_processes N / --accelerate_config NAME: relaunched as trl does
        try:
            named = rest[0] if rest and not rest[0].startswith("-") else _pop_option(rest, "--config", None)[0]
            launch, rest = plan_launch(name, rest, os.environ, named)
        except AlignkitError as exc:
            print(f"alignkit {name}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        if launch:
            print(f"alignkit {name}: launching {' '.join(launch[1:])}", file=sys.stderr)
            return subprocess.call(launch)
    if name == "report":  # alignkit report RUN_DIR [RUN_DIR ...] [--key value]
        runs = []
        while rest and not rest[0].startswith("--"):
            runs.append(rest.pop(0))
        rest = (["--runs", ",".join(runs)] if runs else []) + rest
    if name == "label":  # alignkit label [ACTION] PROJECT_DIR [NAME] [--key value]
        words = []
        while rest and not rest[0].startswith("--"):
            words.append(rest.pop(0))
        action = words.pop(0) if words and words[0] in LABEL_ACTIONS else "serve"
        named = ["--project", words[0]] if words else []
        if action == "add-annotator" and len(words) > 1:
            named += ["--name", words[1]]
        rest = ["--action", action, *named, *rest]
    config_path = rest.pop(0) if rest and not rest[0].startswith("--") else None
    if config_path is None:  # TRL's spelling: trl dpo --config file.yaml
        config_path, rest = _pop_option(rest, "--config", None)
    try:
        if name == "doctor":  # a value that fails validation is one failed check; every other check still runs
            invalid: list[tuple[str, str]] = []
            config = load_config(config_cls, config_path, rest, invalid=invalid)
            outcome = _load(command.runner)(config, invalid)
        else:
            config = load_config(config_cls, config_path, rest)
            outcome = _load(command.runner)(config)
    except AlignkitError as exc:
        print(f"alignkit {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"\nalignkit {name}: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr
        )
        return 130
    return outcome if isinstance(outcome, int) else getattr(outcome, "exit_code", 0)


def _leave_process_group(code: int) -> None:
    """Under a multi-process launch, leave the process group before exiting. CPU processes (gloo, which
    DeepSpeed's CPU accelerator uses too) leave native communication threads that abort the interpreter's
    teardown now and then ("terminate called without an active exception"), after the work is done and
    saved; such a process exits at once (files are closed, streams flushed), as DeepSpeed launches do."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        cpu_processes = dist.get_backend() == "gloo"
        dist.destroy_process_group()
        deepspeed = "deepspeed" in sys.modules and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        if cpu_processes or deepspeed:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


TRAINING_COMMANDS = ("dpo", "kto", "orpo", "sft", "reward", "ppo", "grpo", "rloo")


def _pop_option(args: list[str], option: str, default: str | None) -> tuple[str | None, list[str]]:
    """Remove ``option value`` (or ``option=value``) from ``args``; (value, the rest)."""
    for i, token in enumerate(args):
        if token == option and i + 1 < len(args):
            return args[i + 1], args[:i] + args[i + 2 :]
        if token.startswith(option + "="):
            return token.split("=", 1)[1], args[:i] + args[i + 1 :]
    return default, args


if __name__ == "__main__":
    raise SystemExit(main())
