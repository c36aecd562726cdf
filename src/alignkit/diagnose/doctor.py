"""``alignkit doctor config.yaml``: the pre-flight checklist on the real data, tokenizer and model.

Prints a pass/warn/fail table with the fix for each finding; exit status 1 on any fail. Every
training command runs the same checks before it writes anything (``preflight: false`` skips
them): a fail stops the run, warnings are printed and training goes on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from alignkit.data.methods import data_loader
from alignkit.data.prompts import load_prompts
from alignkit.data.records import load_train_eval
from alignkit.data.tokenize import TokenizedRows
from alignkit.diagnose.checks import SETUP_CHECKS, check_output_dir
from alignkit.diagnose.context import Check, Context, views_of
from alignkit.diagnose.data_checks import DATA_CHECKS
from alignkit.diagnose.rl_checks import rl_checks
from alignkit.errors import AlignkitError, DataValidationError
from alignkit.judges.rewards import CombinedReward
from alignkit.models.loading import load_model_and_tokenizer

METHOD_OF_CONFIG = {
    "DPOConfig": "dpo",
    "DemoConfig": "dpo",
    "KTOConfig": "kto",
    "ORPOConfig": "orpo",
    "SFTConfig": "sft",
    "RewardConfig": "reward",
    "PPOConfig": "ppo",
    "GRPOConfig": "grpo",
    "RLOOConfig": "rloo",
}
RL_METHODS = ("ppo", "grpo", "rloo")
STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


class PreflightError(AlignkitError):
    """A pre-flight check failed: nothing was trained or written (exit status 2)."""

    exit_code = 2


@dataclass
class DoctorReport:
    """The doctor's checks, in the order they ran."""

    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warned(self) -> list[Check]:
        """The checks that warned."""
        return [c for c in self.checks if c.status == "warn"]

    def as_dict(self) -> list[dict]:
        """Each check as a dict (name, status, detail, fix)."""
        return [c.__dict__ for c in self.checks]


def method_of(config) -> str:
    """The training method a config belongs to (dpo, kto, orpo, sft, reward)."""
    return METHOD_OF_CONFIG.get(type(config).__name__, "dpo")


def run_checks(
    config,
    train_examples: list,
    eval_examples: list,
    tokenizer,
    model=None,
    include_output_dir: bool = True,
    tokenized: TokenizedRows | None = None,
) -> DoctorReport:
    """Every check that applies to this config and method (None: not applicable). ``tokenized``: the training
    rows as the trainer tokenized them (else they are tokenized here the same way, for the length checks)."""
    views = views_of(train_examples), views_of(eval_examples or [])
    ctx = Context(config, method_of(config), *views, tokenizer, model, examples=train_examples)
    if tokenized is not None:
        ctx.lengths = {"prompt": tokenized.prompt_lengths, "total": tokenized.total_lengths}
    checks = [
        Check(
            "data",
            "pass",
            f"{len(ctx.train)} training and {len(ctx.eval)} eval rows validated (fields present and typed).",
        )
    ]
    for check in (*DATA_CHECKS, *SETUP_CHECKS):
        result = check(ctx)
        if result is not None:
            checks.append(result)
    if include_output_dir:
        checks.append(check_output_dir(ctx))
    return DoctorReport(checks)


def print_report(
    report: DoctorReport, console: Console | None = None, title: str = "alignkit doctor", only_findings: bool = False
) -> None:
    """Print the checks as a table (only warnings and fails with ``only_findings``) and a one-line tally."""
    console = console or Console(stderr=True)
    shown = [c for c in report.checks if c.status != "pass"] if only_findings else report.checks
    if shown:
        table = Table(title=title, show_lines=True, expand=True)
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("finding", ratio=1)
        table.add_column("fix", ratio=1)
        for c in shown:
            table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.detail, c.fix)
        console.print(table)
    passed = len(report.checks) - len(report.failed) - len(report.warned)
    console.print(f"{title}: {passed} passed, {len(report.warned)} warnings, {len(report.failed)} failed")


def doctor(config, method: str | None = None, invalid: list[tuple[str, str]] = ()) -> DoctorReport:
    """Load the data, tokenizer and model of a training config and run every check (the CLI's
    ``alignkit doctor``). ``invalid``: (key, message) of values that failed validation (left at their
    defaults, so the other checks could run); each is a failed check."""
    method = method or method_of(config)
    if method in RL_METHODS:
        return _rl_doctor(config, method, invalid)
    try:
        train, evaluation = load_train_eval(config, data_loader(method))
    except DataValidationError as exc:
        report = DoctorReport(
            [
                Check(
                    "data",
                    "fail",
                    f"{exc.total} problem(s) in {exc.source} (listed below).",
                    "Fix the rows listed (file:line, field), then run the doctor again.",
                )
            ]
        )
        print_report(report)
        print("\n".join(str(exc).splitlines()[1:]), file=sys.stderr)
        return report
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype, reward_head=method == "reward")
    report = run_checks(config, train, evaluation, tokenizer, model)
    report.checks[:0] = _invalid_checks(invalid, method)
    print_report(report)
    return report


def _invalid_checks(invalid, method: str) -> list[Check]:
    return [
        Check(
            f"config: {key}",
            "fail",
            message,
            f"Set a valid {key} (`alignkit {method} --help` describes it); the other checks used its default.",
        )
        for key, message in invalid
    ]


def _rl_doctor(config, method: str, invalid) -> DoctorReport:
    try:
        train, evaluation = load_prompts(config)
    except AlignkitError as exc:
        report = DoctorReport([Check("data", "fail", str(exc).splitlines()[0], "Fix the prompt rows listed.")])
        print_report(report)
        print("\n".join(str(exc).splitlines()[1:]), file=sys.stderr)
        return report
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype, trust_remote_code=config.trust_remote_code)
    checks = rl_checks(config, method, train, evaluation, tokenizer, model, CombinedReward(config.rewards))
    report = DoctorReport(_invalid_checks(invalid, method) + checks)
    print_report(report)
    return report


def rl_preflight(config, method: str, train_rows, eval_rows, tokenizer, model, reward_fn) -> DoctorReport | None:
    """The RL commands' pre-flight (see :func:`preflight`)."""
    if not config.preflight or config.resume:
        return None
    report = DoctorReport(rl_checks(config, method, train_rows, eval_rows, tokenizer, model, reward_fn))
    return _stop_on_fail(report)


def doctor_cli(config, invalid: list[tuple[str, str]] = ()) -> int:
    """``alignkit doctor``: exit status 1 when any check fails."""
    return 1 if doctor(config, invalid=invalid).failed else 0


def preflight(
    config, train_examples: list, eval_examples: list, tokenizer, model, tokenized: TokenizedRows | None = None
) -> DoctorReport | None:
    """The checks a training command runs before writing anything (on the rows as it tokenized them);
    raises on a fail; None when skipped (``preflight: false``, or a resumed run)."""
    if not config.preflight or config.resume:
        return None
    report = run_checks(config, train_examples, eval_examples, tokenizer, model, False, tokenized)
    return _stop_on_fail(report)


def _stop_on_fail(report: DoctorReport) -> DoctorReport:
    print_report(report, title="pre-flight checks", only_findings=True)
    if report.failed:
        raise PreflightError(
            f"pre-flight check failed: {'; '.join(f'{c.name}: {c.detail}' for c in report.failed)} "
            "Nothing was trained or written. Fix it, or pass --preflight false to train anyway."
        )
    return report
