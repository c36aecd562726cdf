"""``alignkit eval``: did the model get better, and did nothing break?

1. win-rate of the trained model against its reference on held-out prompts (both answer, a judge
   picks; position-swapped for LLM judges; bootstrap 95% interval; per-example records);
2. held-out reward accuracy (implicit DPO reward, or a reward model), flagged outside 0.70-0.90;
3. capability probes before vs after (perplexity, arithmetic, facts, optional lm-eval tasks);
4. a manual inspection sheet.

Writes ``eval_results.json``, ``winrate.jsonl``, ``inspection.md``/``.html`` to the eval directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from alignkit.configs import EvalConfig
from alignkit.data.preference import load_preference_data
from alignkit.data.prompts import load_prompt_rows
from alignkit.data.records import split_train_eval, write_jsonl
from alignkit.engine.generation import generate_responses
from alignkit.errors import AlignkitError, RunDirError
from alignkit.evaluate import probes as probe_lib
from alignkit.evaluate.models import (
    EvalModels,
    default_reference,
    load_eval_models,
    maybe_reference,
    run_config,
)
from alignkit.evaluate.reward_accuracy import (
    band_flag,
    implicit_reward_accuracy,
    pair_logps,
)
from alignkit.evaluate.sheet import write_inspection
from alignkit.evaluate.winrate import judge_outcomes, win_rate
from alignkit.judges.endpoint_job import EndpointJob
from alignkit.judges.scorers import RewardModelScorer
from alignkit.models.loading import resolve_model_path
from alignkit.train.run_dir import check_deletable
from alignkit.train.run_outputs import add_eval_to_model_card


@dataclass
class EvalResult:
    """What ``alignkit eval`` wrote: its folder, the results, and the per-prompt records."""

    output_dir: Path
    results: dict
    records: list[dict]


def eval_dir_for(config: EvalConfig) -> Path:
    """The eval folder: ``output_dir``, else ``<run>/eval`` for a run directory, else ``alignkit-runs/eval-<name>``."""
    if config.output_dir:
        return Path(config.output_dir)
    if run_config(config.model):
        run = Path(config.model)
        return (run.parent if run.name == "final" else run) / "eval"
    return Path("alignkit-runs") / f"eval-{Path(config.model).name or 'model'}"


EVAL_OUTPUTS = ("eval_results.json", "winrate.jsonl", "inspection.html", "inspection.md")


def prepare_eval_dir(path: Path, overwrite: bool) -> Path:
    """Create the eval folder, refusing a non-empty one unless ``overwrite``."""
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"{path} already exists and is not empty; nothing was changed. Pass "
                "--overwrite or choose another --output_dir"
            )
        check_deletable(path, lambda name: name in EVAL_OUTPUTS, "evaluation")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_eval_prompts(config: EvalConfig, pairs: list) -> list[dict]:
    """The held-out prompts: ``prompts``, else the distinct prompts of the held-out pairs."""
    if config.prompts:
        rows = load_prompt_rows(config.prompts)
    else:
        seen, rows = set(), []
        for p in pairs:
            if repr(p.prompt) not in seen:
                seen.add(repr(p.prompt))
                rows.append({"prompt": p.prompt, "where": p.where})
    return rows[: config.max_prompts] if config.max_prompts else rows


def resolve_judge(config: EvalConfig, rows: list[dict]) -> str:
    """The judge to use: the one set, else an LLM judge when one is configured, else the verifier when every
    prompt has an answer or tests, else the reward model."""
    if config.eval_judge != "auto":
        return config.eval_judge
    if config.judge_base_url:
        return "llm"
    if rows and all("answer" in r or r.get("tests") for r in rows):
        return "verifier"
    return "reward_model" if config.reward_model else "none"


def evaluate_model(
    config: EvalConfig, models: EvalModels | None = None, reference_answers: list[str] | None = None
) -> EvalResult:
    """Run every measurement; ``models``/``reference_answers`` let a sweep load and answer once."""
    out = prepare_eval_dir(eval_dir_for(config), config.overwrite)
    config = config.model_copy(update={"output_dir": str(out)})
    console = Console(stderr=True)
    from_run = run_config(config.model)
    pairs = _load_pairs(config, from_run)
    rows = load_eval_prompts(config, pairs)
    if not rows and not pairs:
        raise AlignkitError("nothing to evaluate: give --prompts (held-out prompts) and/or --pairs (held-out pairs)")
    models = models or load_eval_models(config.model, config.reference, config.dtype)
    results: dict = {"model": config.model, "reference": models.reference_name, "shares_weights": models.shares_weights}
    show = not config.disable_tqdm

    records: list[dict] = []
    judge_kind = resolve_judge(config, rows)
    if rows and judge_kind != "none":
        answer = _answerer(config, models, rows, show)
        mine = answer(False, "aligned answers")
        theirs = reference_answers if reference_answers is not None else answer(True, "reference answers")
        records, judged = _judge(config, judge_kind, rows, mine, theirs, show)
        summary = win_rate([r["outcome"] for r in records], config.n_bootstrap, config.seed)
        results["win_rate"] = {**summary.as_dict(), "judge": judged}
        results["reference_answers"] = theirs
        write_jsonl(out / "winrate.jsonl", records)
        write_inspection(records, out, config.inspect)
        console.print(f"win-rate vs reference ({judged}): {summary}")
    elif rows:
        results["win_rate"] = None
        console.print(
            "win-rate skipped: no judge applies (set judge_base_url, give prompts with answers, or set eval_judge)"
        )

    if pairs:
        results["reward_accuracy"] = _reward_accuracy(config, models, pairs, from_run)
        console.print(
            "held-out reward accuracy: "
            f"{results['reward_accuracy']['accuracy']:.3f} "
            f"({results['reward_accuracy']['flag']})"
        )
    results["probes"] = _probes(config, models, console)
    results["regressions"] = [p["probe"] for p in results["probes"] if p["regressed"]]
    (out / "eval_results.json").write_text(
        json.dumps({k: v for k, v in results.items() if k != "reference_answers"}, indent=1)
    )
    final = Path(resolve_model_path(config.model))
    run_card = final.name == "final" and (final.parent / "config.yaml").is_file()  # an alignkit run's, not a user's
    if run_card and add_eval_to_model_card(final, results):
        console.print(f"alignkit eval: added the results to the model card {final / 'README.md'}")
    console.print(f"alignkit eval: wrote {out}")
    return EvalResult(out, results, records)


def _load_pairs(config: EvalConfig, from_run: dict) -> list:
    """Held-out pairs: ``pairs``, else the run's eval_data, else the run's eval_split of its train_data
    (the same split training held out)."""
    if config.pairs or from_run.get("eval_data"):
        pairs = load_preference_data(config.pairs or from_run["eval_data"])
    elif from_run.get("train_data") and from_run.get("eval_split", 0) > 0 and "beta" in from_run:
        pairs = split_train_eval(
            load_preference_data(from_run["train_data"]), from_run["eval_split"], from_run.get("seed", 42)
        )[1]
    else:
        return []
    return pairs[: config.max_prompts] if config.max_prompts else pairs


def _answerer(config: EvalConfig, models: EvalModels, rows: list[dict], show: bool):
    def answer(use_reference: bool, desc: str) -> list[str]:
        with maybe_reference(models, use_reference) as model:
            return generate_responses(
                model,
                models.tokenizer,
                [r["prompt"] for r in rows],
                config.max_new_tokens,
                config.batch_size,
                system_prompt=config.system_prompt,
                temperature=config.temperature,
                desc=desc,
                show_progress=show,
            )

    return answer


def _judge(config: EvalConfig, kind: str, rows: list[dict], mine: list[str], theirs: list[str], show: bool):
    job = EndpointJob(config)
    with job.guard():
        if kind == "llm":
            judge = job.judge()
            records = judge_outcomes(rows, mine, theirs, judge=judge, show_progress=show)
            return (
                records,
                f"llm:{config.judge_model} ({config.judge_verdict_from}, "
                f"position-swapped; {judge.inconsistent} inconsistent)",
            )
        scorer = job.scorer(kind, config)
        return judge_outcomes(rows, mine, theirs, scorer=scorer, show_progress=show), scorer.name


def _reward_accuracy(config: EvalConfig, models: EvalModels, pairs: list, from_run: dict) -> dict:
    max_length = config.max_length or from_run.get("max_length", 1024)
    max_prompt_length = config.max_prompt_length or from_run.get("max_prompt_length")
    if config.reward_model:
        rm = RewardModelScorer(config.reward_model, config.dtype)
        scores = [rm.score_group({"prompt": p.prompt}, [p.chosen, p.rejected])[0] for p in pairs]
        accuracy = sum(c > r for c, r in scores) / len(scores)
        return {
            "kind": f"reward_model:{config.reward_model}",
            "accuracy": accuracy,
            "margin": sum(c - r for c, r in scores) / len(scores),
            "pairs": len(scores),
            "flag": band_flag(accuracy),
        }
    beta = config.beta or from_run.get("beta") or 0.1
    policy = pair_logps(models.policy, models.tokenizer, pairs, max_length, max_prompt_length, config.batch_size)
    with models.reference() as reference:
        ref = pair_logps(reference, models.tokenizer, pairs, max_length, max_prompt_length, config.batch_size)
    return {"kind": f"implicit DPO reward (beta {beta:g})", **implicit_reward_accuracy(policy, ref, beta)}


def _probes(config: EvalConfig, models: EvalModels, console: Console) -> list[dict]:
    found = []
    for name in config.probes:
        with models.reference() as reference:
            before, n = probe_lib.probe_score(
                reference, models.tokenizer, name, config.probe_size, config.batch_size, config.perplexity_text
            )
        after, _ = probe_lib.probe_score(
            models.policy, models.tokenizer, name, config.probe_size, config.batch_size, config.perplexity_text
        )
        result = probe_lib.probe_result(name, before, after, n)
        found.append(result.as_dict(config.regression_tolerance, config.perplexity_tolerance))
        console.print(
            f"probe {name}: {before:.3f} -> {after:.3f} ({result.delta:+.3f})"
            f"{' REGRESSED' if found[-1]['regressed'] else ''}"
        )
    if config.lm_eval_tasks:
        found += _lm_eval(config)
    return found


def _lm_eval(config: EvalConfig) -> list[dict]:
    reference = config.reference or default_reference(config.model)
    before = probe_lib.run_lm_eval(resolve_model_path(reference), config.lm_eval_tasks, config.lm_eval_limit)
    after = probe_lib.run_lm_eval(resolve_model_path(config.model), config.lm_eval_tasks, config.lm_eval_limit)
    return [
        probe_lib.ProbeResult(
            f"lm_eval:{task}", "accuracy", before[task], after.get(task, float("nan")), 0, True
        ).as_dict(config.regression_tolerance)
        for task in before
    ]
