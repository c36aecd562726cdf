"""Prompt rows (for `alignkit pairs`, the RL trainers, `eval` and `label`): ``prompt`` plus optional
``answer`` (null: cannot be known), ``reference`` (a known-good reply) and ``tests`` (Python asserts)."""

from __future__ import annotations

from alignkit.data.preference import check_content
from alignkit.data.records import FaultCollector, load_each, read_records, split_train_eval
from alignkit.errors import AlignkitError


def load_prompt_rows(source: str, needs_answer: bool = False, fields: dict | None = None) -> list[dict]:
    """Prompt rows, validated up front; faults name file:line and field (``fields``: see read_records)."""
    records = read_records(source, fields=fields)
    faults = FaultCollector(source)
    rows = []
    for record in records:
        row, where = record.data, record.where
        if not isinstance(row, dict):
            faults.add(where, None, f"expected an object with a prompt, got {type(row).__name__}")
            continue
        before = faults.total
        prompt = row.get("prompt")
        if prompt is None:
            faults.add(where, "prompt", "missing")
        else:
            prompt = check_content(prompt, where, "prompt", faults, response=False)
        tests = row.get("tests")
        if tests is not None and (
            not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests)
        ):
            faults.add(where, "tests", "expected a non-empty list of Python statements (strings)")
        reference = row.get("reference")
        if reference is not None and (not isinstance(reference, str) or not reference.strip()):
            faults.add(where, "reference", "expected a non-empty string")
        if needs_answer and "answer" not in row and tests is None:
            faults.add(where, "answer", "missing: the verifier needs `answer` (null if it cannot be known) or `tests`")
        if faults.total == before:
            rows.append({**row, "prompt": prompt, "where": where})
    faults.raise_if_any()
    if not rows:
        raise AlignkitError(f"{source}: contains no prompts")
    return rows


def load_prompts(config) -> tuple[list[dict], list[dict]]:
    """An RL config's validated train and eval prompt rows (with answers when a verifier scores them):
    ``eval_data``, else an ``eval_split`` of ``train_data``."""
    needs_answer = any(spec.kind == "verifier" for spec in config.rewards)
    fields = config.data_fields or None

    def read(source: str) -> list[dict]:
        return load_each(source, config.max_samples, lambda one: load_prompt_rows(one, needs_answer, fields), config)

    rows = read(config.train_data)
    if config.eval_data:
        return rows, read(config.eval_data)
    return split_train_eval(rows, config.eval_split, config.seed)
