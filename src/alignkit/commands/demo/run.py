"""``alignkit demo``: align the embedded model with DPO on this machine and show, honestly, what changed.

1. prepare the embedded model (dequantized once into the cache);
2. build preference pairs from the model's answers under a good system prompt, its own default
   answers and reference replies, ranked by a verifier (correct + concise wins), with retention
   pairs on general-knowledge questions the model already answers (see ``commands.demo.pairs``);
3. answer held-out prompts with the reference model ("before"): phrasings, question shapes and
   general-knowledge questions that no training pair uses;
4. train with DPO (LoRA by default; ``--use_peft false`` for full fine-tuning);
5. answer the same prompts with the aligned model ("after"), run the capability probes of
   ``alignkit eval`` on both, judge every held-out answer against the reference's, and print it all.

The verdict never claims more than the measurements: a capability probe that regresses past
``alignkit eval``'s tolerance, a drop in held-out general knowledge or new looping replies are
printed in red and the command exits 1.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from alignkit.atomic import atomic_path
from alignkit.commands.demo.pairs import demo_pairs, heldout_pairs, pair_mix
from alignkit.commands.demo.report import (
    METRIC_LABELS,
    print_comparison,
    print_dpo_metrics,
    print_samples,
    print_verdict,
    regressions,
)
from alignkit.commands.demo.tasks import demo_tasks
from alignkit.configs import DemoConfig, EvalFields
from alignkit.data.records import write_jsonl
from alignkit.data.synthetic import GOOD_SYSTEM_PROMPT
from alignkit.engine.fingerprint import COMPUTING_PACKAGES, code_digest, model_fingerprint
from alignkit.engine.generation import generate_replies, generate_responses
from alignkit.evaluate.answers import answer_metrics, rule_outcome
from alignkit.evaluate.probes import probe_result, probe_score
from alignkit.evaluate.winrate import win_rate
from alignkit.models.embedded import cache_dir
from alignkit.models.loading import load_model_and_tokenizer, resolve_model_path
from alignkit.train.dpo import train_dpo
from alignkit.train.run_dir import prepare_run_dir

DEMO_DATA_VERSION = 4
PROBES = EvalFields()  # the capability probes exactly as `alignkit eval` runs them by default


@dataclass
class DemoResult:
    """What the demo measured: held-out answer metrics before and after, the DPO metrics, the probes, the
    win-rate, and the problems (regressions, degenerate replies) that make it exit 1."""

    run_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    probes: list[dict] = field(default_factory=list)
    win_rate: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when the aligned model regressed (the CLI exits with it), else 0."""
        return 1 if self.problems else 0


def run_demo(config: DemoConfig) -> DemoResult:
    """``alignkit demo``: build pairs from the embedded model's own answers, train DPO, and compare the model
    before and after on held-out prompts and capability probes; returns the :class:`DemoResult`."""
    console = Console()
    started = time.time()
    if not config.output_dir:
        config = config.model_copy(update={"output_dir": f"alignkit-runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"})
    run_dir = prepare_run_dir(config.output_dir, config.overwrite, config.resume)
    show = not config.disable_tqdm

    def stage(title: str) -> None:
        console.rule(f"[bold]{title}[/bold] [dim]({time.time() - started:.0f}s)[/dim]")

    stage("1/5 Embedded model")
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype)
    console.print(
        f"model: {resolve_model_path(config.model)} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
        "parameters)"
    )

    stage("2/5 Preference pairs")
    train_tasks, eval_tasks = demo_tasks(config.num_train_prompts, config.num_eval_prompts, config.seed)
    answers = _reference_answers(config, model, tokenizer, train_tasks, eval_tasks, show)
    train_pairs, summary = demo_pairs(
        train_tasks, answers["good"], answers["own"], config.hedge_pair_every, config.retention_pairs
    )
    train_path, eval_path = run_dir / "data" / "train.jsonl", run_dir / "data" / "eval.jsonl"
    write_jsonl(train_path, train_pairs)
    write_jsonl(eval_path, heldout_pairs(eval_tasks, answers["before"][0]))
    console.print(f"training pairs: {summary}; by kind: {dict(sorted(pair_mix(train_pairs).items()))}")
    console.print(f"held-out prompts (phrasings, question shapes and facts never trained on): {len(eval_tasks)}")

    stage("3/5 Before: the reference model on held-out prompts")
    before_answers, before_finished = answers["before"]
    before = answer_metrics(eval_tasks, before_answers, before_finished)
    console.print("  ".join(f"{METRIC_LABELS[k][0]}: {v:.3g}" for k, v in before.items()))

    stage(f"4/5 DPO training ({'LoRA' if config.use_peft else 'full fine-tuning'})")
    del model
    train_config = config.model_copy(update={"train_data": str(train_path), "eval_data": str(eval_path)})
    result = train_dpo(train_config, run_dir=run_dir)

    stage("5/5 After: the aligned model on the same prompts, and the capability probes")
    aligned = result.model.lm
    after_answers, after_finished = generate_replies(
        aligned,
        tokenizer,
        [t.prompt for t in eval_tasks],
        config.max_new_tokens,
        config.generation_batch_size,
        desc="aligned answers",
        show_progress=show,
    )
    after = answer_metrics(eval_tasks, after_answers, after_finished)
    probes = [
        probe_result(
            name, answers["probes"][name], *probe_score(aligned, tokenizer, name, PROBES.probe_size, PROBES.batch_size)
        ).as_dict(PROBES.regression_tolerance, PROBES.perplexity_tolerance)
        for name in PROBES.probes
    ]
    outcomes = [rule_outcome(t, mine, theirs) for t, mine, theirs in zip(eval_tasks, after_answers, before_answers)]
    wins = win_rate(outcomes, PROBES.n_bootstrap, config.seed).as_dict()
    problems = regressions(before, after, probes, PROBES.regression_tolerance)

    print_samples(console, eval_tasks, before_answers, after_answers, config.show_samples)
    print_comparison(console, eval_tasks, before, after, probes, wins)
    print_dpo_metrics(console, result.train_metrics, result.eval_metrics)
    demo = DemoResult(run_dir, before, after, result.train_metrics, result.eval_metrics, probes, wins, problems)
    _write_results(demo, eval_tasks, before_answers, after_answers, outcomes)
    stage("Written")
    for path, what in [
        (run_dir / "final", "aligned model (load with peft/transformers from_pretrained)"),
        (run_dir / "metrics.jsonl", "training and eval metrics, one JSON object per log"),
        (run_dir / "tensorboard", "TensorBoard logs"),
        (run_dir / "config.yaml", "the resolved config (rerun with alignkit dpo config.yaml)"),
        (run_dir / "data", "the preference pairs trained and evaluated on"),
        (
            run_dir / "demo_answers.jsonl",
            "every held-out prompt with before/after answers and the rule judge's outcome",
        ),
        (run_dir / "demo_results.json", "before/after metrics, probes, win-rate and the verdict"),
    ]:
        console.print(f"  {path}  [dim]{what}[/dim]")
    console.print(f"done in {time.time() - started:.0f}s")
    print_verdict(console, demo.problems, wins, run_dir)
    return demo


def _reference_answers(config: DemoConfig, model, tokenizer, train_tasks, eval_tasks, show: bool) -> dict:
    """The reference model's answers (greedy, so deterministic) and its probe scores. Each set is
    cached on its own, keyed by the model, its prompts, the settings and the code that makes them (generation and
    probes), so reruns (and runs that change only the held-out set) skip that work."""
    base = [
        DEMO_DATA_VERSION,
        code_digest(packages=(*COMPUTING_PACKAGES, "evaluate")),
        model_fingerprint(resolve_model_path(config.model), cache_dir()),
        config.dtype,
        config.max_new_tokens,
        config.generation_batch_size,
    ]

    def cached(key: list, make):
        path = cache_dir() / "demo" / f"{hashlib.sha256(json.dumps(base + key).encode()).hexdigest()[:24]}.json"
        if path.is_file():
            return json.loads(path.read_text())
        value = make()
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(value))
        return value

    def answers(tasks, system_prompt, desc):
        prompts = [t.prompt for t in tasks]
        return cached(
            [system_prompt, prompts],
            lambda: generate_responses(
                model,
                tokenizer,
                prompts,
                config.max_new_tokens,
                config.generation_batch_size,
                system_prompt=system_prompt,
                desc=desc,
                show_progress=show,
            ),
        )

    return {
        "good": answers(train_tasks, GOOD_SYSTEM_PROMPT, "answers under the good system prompt"),
        "own": answers(train_tasks, None, "the model's own answers"),
        "before": cached(
            [None, [t.prompt for t in eval_tasks], "finished"],
            lambda: generate_replies(
                model,
                tokenizer,
                [t.prompt for t in eval_tasks],
                config.max_new_tokens,
                config.generation_batch_size,
                desc="reference answers (held-out)",
                show_progress=show,
            ),
        ),
        "probes": cached(
            ["probes", PROBES.probes, PROBES.probe_size, PROBES.batch_size],
            lambda: {
                name: probe_score(model, tokenizer, name, PROBES.probe_size, PROBES.batch_size)[0]
                for name in PROBES.probes
            },
        ),
    }


def _write_results(demo: DemoResult, tasks, before_answers, after_answers, outcomes) -> None:
    rows = [
        {
            "prompt": t.prompt,
            "kind": t.kind,
            "answer": [t.answer, *t.aliases] if t.aliases else t.answer,
            "before": b,
            "after": a,
            "outcome": o,
        }
        for t, b, a, o in zip(tasks, before_answers, after_answers, outcomes)
    ]
    write_jsonl(demo.run_dir / "demo_answers.jsonl", rows)
    summary = {
        "before": demo.before,
        "after": demo.after,
        "probes": demo.probes,
        "win_rate": demo.win_rate,
        "problems": demo.problems,
        "train_metrics": demo.train_metrics,
        "eval_metrics": demo.eval_metrics,
    }
    (demo.run_dir / "demo_results.json").write_text(json.dumps(summary, indent=1))
