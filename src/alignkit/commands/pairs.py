"""``alignkit pairs``: synthetic preference pairs, ready for ``alignkit dpo``.

- ``system_prompt``: for each prompt, a chosen answer under a good system prompt and a rejected
  one under a bad system prompt (separate temperatures and token limits); identical answers are
  dropped, and a scorer, when given, drops pairs it does not agree with.
- ``sample_rank``: ``num_samples`` samples per prompt at different temperatures (plus the row's
  ``reference``), ranked by a scorer; best vs worst (or every informative pair); ties dropped.

Writes ``output`` (JSONL: prompt/chosen/rejected + provenance) atomically, and
``<output>.summary.json`` (pairs kept, dropped and why, requests spent). Endpoint replies are
cached in ``<output>.cache.jsonl``, so an interrupted job rerun with the same settings resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignkit.configs import PairsConfig
from alignkit.data.prompts import load_prompt_rows
from alignkit.data.synthetic import (
    Candidate,
    PairBuildSummary,
    pairs_from_scores,
    unique_candidates,
    write_pairs,
)
from alignkit.errors import AlignkitError
from alignkit.judges.endpoint_job import EndpointJob, refuse_existing
from alignkit.judges.generators import EndpointGenerator, LocalGenerator


@dataclass
class PairsResult:
    """What ``alignkit pairs`` wrote: the output file, its rows, and the summary (kept, dropped and why)."""

    output: Path
    rows: list[dict]
    summary: dict


def build_pairs(config: PairsConfig) -> PairsResult:
    """``alignkit pairs``: generate candidate answers for each prompt, rank or contrast them, and write the
    preference pairs atomically (with a summary); returns what was written."""
    output = refuse_existing(config.output, config.overwrite)
    scorer_kind = config.resolved_scorer
    rows = load_prompt_rows(config.prompts, needs_answer=scorer_kind == "verifier")
    rows = rows[: config.max_prompts] if config.max_prompts else rows
    job = EndpointJob(config)
    show = not config.disable_tqdm
    gen_settings = config.endpoint("generator")
    generator = (
        EndpointGenerator(job.client(gen_settings), show)
        if gen_settings
        else LocalGenerator(config.generator, config.dtype, config.batch_size, show)
    )
    scorer = job.scorer(scorer_kind, config) if scorer_kind != "none" else None
    with job.guard():
        if config.method == "system_prompt":
            pairs, summary = _contrast_pairs(config, rows, generator, scorer)
        else:
            pairs, summary = _sample_rank_pairs(config, rows, generator, scorer)
    report = {
        **summary.as_dict(),
        "prompts": len(rows),
        "method": config.method,
        "generator": generator.name,
        "scorer": scorer.name if scorer else None,
        **job.stats(),
    }
    write_pairs(output, pairs, report)
    print(f"alignkit pairs: {summary} from {len(rows)} prompts -> {output}")
    if not pairs:
        raise AlignkitError(f"no pairs were kept ({summary}); see {output}.summary.json")
    return PairsResult(output, pairs, report)


def _generate_rotated(generator, prompts: list, system_prompts: list[str], **kwargs) -> tuple[list[str], list[int]]:
    """Prompt i answered under system_prompts[i mod len]; returns (answers, system prompt index of each)."""
    answers: list[str] = [""] * len(prompts)
    which = [i % len(system_prompts) for i in range(len(prompts))]
    for k, system_prompt in enumerate(system_prompts):
        idx = [i for i in range(len(prompts)) if which[i] == k]
        if idx:
            for i, text in zip(
                idx, generator.generate([prompts[i] for i in idx], system_prompt=system_prompt, **kwargs)
            ):
                answers[i] = text
    return answers, which


def _contrast_pairs(config: PairsConfig, rows: list[dict], generator, scorer) -> tuple[list[dict], PairBuildSummary]:
    prompts = [r["prompt"] for r in rows]
    good, good_id = _generate_rotated(
        generator,
        prompts,
        config.good_system_prompts,
        temperature=config.chosen_temperature,
        max_new_tokens=config.chosen_max_new_tokens,
        top_p=config.top_p,
        seed=config.seed,
    )
    bad, bad_id = _generate_rotated(
        generator,
        prompts,
        config.bad_system_prompts,
        temperature=config.rejected_temperature,
        max_new_tokens=config.rejected_max_new_tokens,
        top_p=config.top_p,
        seed=config.seed + 1,
    )
    summary, pairs = PairBuildSummary(), []
    for i, row in enumerate(rows):
        chosen, rejected = good[i].strip(), bad[i].strip()
        if not chosen or not rejected:
            summary.dropped["with an empty answer"] += 1
            continue
        if chosen == rejected:
            summary.dropped["with identical answers under both system prompts"] += 1
            continue
        provenance = {
            "method": "system_prompt",
            "generator": generator.name,
            "chosen_system_prompt": f"good[{good_id[i]}]",
            "rejected_system_prompt": f"bad[{bad_id[i]}]",
            "source_row": row["where"],
        }
        if scorer is not None:
            scores, detail = scorer.score_group(row, [chosen, rejected])
            provenance.update(
                scorer=scorer.name, scores={"chosen": round(scores[0], 4), "rejected": round(scores[1], 4)}, **detail
            )
            if scores[0] - scores[1] <= config.min_score_gap:
                summary.dropped["where the scorer did not prefer the good-prompt answer"] += 1
                continue
        pairs.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "provenance": provenance})
        summary.kept += 1
    return pairs, summary


def _sample_rank_pairs(config: PairsConfig, rows: list[dict], generator, scorer) -> tuple[list[dict], PairBuildSummary]:
    prompts = [r["prompt"] for r in rows]
    samples = []
    for k in range(config.num_samples):
        temperature = config.temperatures[k % len(config.temperatures)]
        texts = generator.generate(
            prompts,
            system_prompt=config.system_prompt,
            temperature=temperature,
            max_new_tokens=config.max_new_tokens,
            top_p=config.top_p,
            seed=config.seed + k,
        )
        samples.append([(text, f"sample{k}@T{temperature:g}") for text in texts])
    summary, pairs = PairBuildSummary(), []
    for i, row in enumerate(rows):
        group = [Candidate(s[i][0], s[i][1]) for s in samples]
        if config.include_reference and row.get("reference"):
            group.append(Candidate(row["reference"], "reference"))
        candidates = unique_candidates(group)
        scores, detail = scorer.score_group(row, [c.text for c in candidates]) if len(candidates) >= 2 else ([], {})
        provenance = {
            "method": "sample_rank",
            "generator": generator.name,
            "scorer": scorer.name,
            "source_row": row["where"],
            **detail,
        }
        pairs += pairs_from_scores(
            row["prompt"], candidates, scores, summary, config.pairing, config.min_score_gap, provenance
        )
    return pairs, summary
