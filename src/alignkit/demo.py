"""``alignkit demo``: align the embedded model with DPO on this machine and show what changed.

1. prepare the embedded model (dequantized once into the cache);
2. build preference pairs from the model's own answers under a good vs a bad system prompt plus
   reference answers, ranked by a verifier (correct + concise wins);
3. answer held-out prompts with the reference model ("before");
4. train with DPO (LoRA by default; ``--use_peft false`` for full fine-tuning);
5. answer the same prompts with the aligned model ("after") and print both side by side.

The run directory has the same layout as ``alignkit dpo`` (aligned model in ``final/``), plus
``data/`` (the pairs) and ``demo_results.json`` / ``demo_answers.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from alignkit.atomic import atomic_path
from alignkit.config import DemoConfig
from alignkit.data.demo_tasks import NOT_SURE_REPLY, demo_tasks
from alignkit.data.records import write_jsonl
from alignkit.data.synthetic import Candidate, rank_into_pairs
from alignkit.data_configs import BAD_SYSTEM_PROMPT, GOOD_SYSTEM_PROMPT
from alignkit.engine.generation import generate_responses
from alignkit.engine.reference import model_fingerprint
from alignkit.evaluate.answers import answer_metrics
from alignkit.judges.verifiers import ShortAnswerTask, verifier_score
from alignkit.models.embedded import cache_dir
from alignkit.models.loading import load_model_and_tokenizer, resolve_model_path
from alignkit.train.dpo import train_dpo
from alignkit.train.run_dir import prepare_run_dir

HEDGE_PAIR_EVERY = 10  # one answerable prompt in ten also gets a (correct answer > "I'm not sure") pair
DEMO_DATA_VERSION = 3
METRIC_LABELS = {
    "accuracy": ("answer accuracy (answerable)", "higher"),
    "not_sure_rate": ("says 'not sure' (unanswerable)", "higher"),
    "false_not_sure_rate": ("wrongly declines (answerable)", "lower"),
    "mean_words": ("mean answer length (words)", "lower"),
}


@dataclass
class DemoResult:
    run_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]


def run_demo(config: DemoConfig) -> DemoResult:
    console = Console()
    started = time.time()
    if not config.output_dir:
        config = config.model_copy(update={"output_dir": f"alignkit-runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"})
    run_dir = prepare_run_dir(config.output_dir, config.overwrite, config.resume)
    show = not config.disable_tqdm

    console.rule("[bold]1/5 Embedded model")
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype)
    console.print(f"model: {resolve_model_path(config.model)} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)")

    console.rule("[bold]2/5 Preference pairs")
    train_tasks, eval_tasks = demo_tasks(config.num_train_prompts, config.num_eval_prompts, config.seed)
    data = _demo_data(config, model, tokenizer, train_tasks, eval_tasks, show)
    train_path, eval_path = run_dir / "data" / "train.jsonl", run_dir / "data" / "eval.jsonl"
    write_jsonl(train_path, data["train_pairs"])
    write_jsonl(eval_path, data["eval_pairs"])
    console.print(f"training pairs: {data['train_summary']}")
    console.print(f"held-out pairs (reference answers vs the model's own): {len(data['eval_pairs'])}")

    console.rule("[bold]3/5 Before: the reference model on held-out prompts")
    before_answers = data["before_answers"]
    before = answer_metrics(eval_tasks, before_answers)
    console.print(_format_metrics(before))

    console.rule(f"[bold]4/5 DPO training ({'LoRA' if config.use_peft else 'full fine-tuning'})")
    del model
    train_config = config.model_copy(update={"train_data": str(train_path), "eval_data": str(eval_path)})
    result = train_dpo(train_config, run_dir=run_dir)

    console.rule("[bold]5/5 After: the aligned model on the same prompts")
    after_answers = generate_responses(result.model.lm, tokenizer, [t.prompt for t in eval_tasks], config.max_new_tokens, config.generation_batch_size, desc="aligned answers", show_progress=show)
    after = answer_metrics(eval_tasks, after_answers)

    _print_samples(console, eval_tasks, before_answers, after_answers, config.show_samples)
    _print_comparison(console, before, after, len(eval_tasks))
    _print_dpo_metrics(console, result.train_metrics, result.eval_metrics)
    _write_results(run_dir, eval_tasks, before_answers, after_answers, before, after, result)
    console.rule("[bold]Written")
    for path, what in [
        (run_dir / "final", "aligned model (load with peft/transformers from_pretrained)"),
        (run_dir / "metrics.jsonl", "training and eval metrics, one JSON object per log"),
        (run_dir / "tensorboard", "TensorBoard logs"),
        (run_dir / "config.yaml", "the resolved config (rerun with alignkit dpo config.yaml)"),
        (run_dir / "data", "the preference pairs trained and evaluated on"),
        (run_dir / "demo_answers.jsonl", "every held-out prompt with before/after answers"),
        (run_dir / "demo_results.json", "before/after metrics"),
    ]:
        console.print(f"  {path}  [dim]{what}[/dim]")
    console.print(f"done in {time.time() - started:.0f}s")
    return DemoResult(run_dir, before, after, result.train_metrics, result.eval_metrics)


def _demo_data(config: DemoConfig, model, tokenizer, train_tasks: list[ShortAnswerTask], eval_tasks: list[ShortAnswerTask], show: bool) -> dict:
    """Verifier-ranked train/eval pairs and the 'before' answers."""
    answers = _model_answers(config, model, tokenizer, train_tasks, eval_tasks, show)
    candidates = [[Candidate(g, "good_system_prompt"), Candidate(b, "bad_system_prompt"), Candidate(t.reference, "reference")]
                  for g, b, t in zip(answers["good"], answers["bad"], train_tasks)]
    train_pairs, summary = _rank_by_verifier(train_tasks, candidates)
    # Calibration in the other direction: on some answerable prompts the hedge itself is the rejected
    # answer, so the model learns to decline only what cannot be answered.
    hedged = [t for t in train_tasks if t.answerable][::HEDGE_PAIR_EVERY]
    hedge_pairs, _ = _rank_by_verifier(hedged, [[Candidate(t.reference, "reference"), Candidate(NOT_SURE_REPLY, "hedge")] for t in hedged])
    train_pairs += hedge_pairs
    summary.kept += len(hedge_pairs)

    before = answers["before"]
    eval_candidates = [[Candidate(a, "reference_model"), Candidate(t.reference, "reference")] for a, t in zip(before, eval_tasks)]
    eval_pairs, _ = _rank_by_verifier(eval_tasks, eval_candidates)
    return {"train_pairs": train_pairs, "train_summary": str(summary), "eval_pairs": eval_pairs, "before_answers": before}


def _rank_by_verifier(tasks: list[ShortAnswerTask], candidates: list[list[Candidate]]):
    return rank_into_pairs([t.prompt for t in tasks], candidates, lambda i, text: verifier_score(tasks[i], text))


def _model_answers(config: DemoConfig, model, tokenizer, train_tasks, eval_tasks, show: bool) -> dict[str, list[str]]:
    """The reference model's answers (deterministic, greedy); cached by model, prompts and settings."""
    key_source = json.dumps([DEMO_DATA_VERSION, model_fingerprint(resolve_model_path(config.model)), config.dtype, config.max_new_tokens,
                             GOOD_SYSTEM_PROMPT, BAD_SYSTEM_PROMPT, [t.prompt for t in train_tasks], [t.prompt for t in eval_tasks]])
    path = cache_dir() / "demo" / f"{hashlib.sha256(key_source.encode()).hexdigest()[:24]}.json"
    if path.is_file():
        return json.loads(path.read_text())

    def generate(prompts, system_prompt, desc):
        return generate_responses(model, tokenizer, prompts, config.max_new_tokens, config.generation_batch_size, system_prompt=system_prompt, desc=desc, show_progress=show)

    prompts = [t.prompt for t in train_tasks]
    answers = {
        "good": generate(prompts, GOOD_SYSTEM_PROMPT, "answers under the good system prompt"),
        "bad": generate(prompts, BAD_SYSTEM_PROMPT, "answers under the bad system prompt"),
        "before": generate([t.prompt for t in eval_tasks], None, "reference answers (held-out)"),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(answers))
    return answers


def _format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{METRIC_LABELS[k][0]}: {v:.3g}" for k, v in metrics.items())


def _print_samples(console: Console, tasks, before: list[str], after: list[str], count: int) -> None:
    if count <= 0:
        return
    answerable = [i for i, t in enumerate(tasks) if t.answerable]
    unanswerable = [i for i, t in enumerate(tasks) if not t.answerable]
    n_unanswerable = min(len(unanswerable), max(1, count * 2 // 5))
    chosen = answerable[: count - n_unanswerable] + unanswerable[:n_unanswerable]
    table = Table(title="Held-out prompts: reference model vs aligned model", show_lines=True, expand=True)
    table.add_column("prompt", ratio=2)
    table.add_column("before (reference)", ratio=3)
    table.add_column("after (aligned)", ratio=3)
    for i in chosen:
        table.add_row(tasks[i].prompt, before[i], after[i])
    console.print(table)


def _print_comparison(console: Console, before: dict, after: dict, n: int) -> None:
    table = Table(title=f"Held-out set ({n} prompts never trained on)")
    for column in ("metric", "before", "after", "better is"):
        table.add_column(column)
    for key, (label, direction) in METRIC_LABELS.items():
        improved = (after[key] > before[key]) if direction == "higher" else (after[key] < before[key])
        style = "green" if improved else ("" if after[key] == before[key] else "red")
        table.add_row(label, f"{before[key]:.3g}", f"[{style}]{after[key]:.3g}[/{style}]" if style else f"{after[key]:.3g}", direction)
    console.print(table)


def _print_dpo_metrics(console: Console, train: dict, evaluation: dict) -> None:
    table = Table(title="Final DPO metrics")
    for column in ("metric", "train (last log)", "eval (held-out pairs)"):
        table.add_column(column)
    for key in ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        table.add_row(key, _fmt(train.get(key)), _fmt(evaluation.get(f"eval/{key}")))
    console.print(table)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _write_results(run_dir: Path, tasks, before_answers, after_answers, before, after, result) -> None:
    rows = [{"prompt": t.prompt, "answer": t.answer, "before": b, "after": a} for t, b, a in zip(tasks, before_answers, after_answers)]
    write_jsonl(run_dir / "demo_answers.jsonl", rows)
    summary = {"before": before, "after": after, "train_metrics": result.train_metrics, "eval_metrics": result.eval_metrics}
    (run_dir / "demo_results.json").write_text(json.dumps(summary, indent=1))
