"""Scorers rank candidate responses to one prompt: higher is better.

``score_group(row, responses) -> (scores, detail)``; ``row`` is the prompt row (it may carry an
``answer`` or ``tests`` for verifiers) and ``detail`` goes into the pair's provenance.

- verifier: ``answer`` matched exactly / normalised / by final number (``answer: null`` means the
  question cannot be answered, so only "not sure" is right); or ``tests`` run against the
  response's code in a sandboxed subprocess (fraction passed).
- heuristic: shorter is better (``length``), a regex matches (``regex``), or your own Python
  function ``fn(row, response) -> float`` (``python``, given as ``path/to/file.py:fn`` or ``module:fn``).
- reward_model: an ``alignkit reward`` output (or any one-output sequence classifier).
- judge: an LLM judge, pairwise round-robin (wins, position-swapped) or single-answer grades.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from alignkit.data.collate import build_sequence_batch, to_device
from alignkit.data.tokenize import reward_text
from alignkit.engine.scores import sequence_scores
from alignkit.errors import AlignkitError
from alignkit.judges.sandbox import extract_code, run_tests
from alignkit.judges.verifiers import (
    contains_answer,
    final_number,
    normalize_answer,
    says_not_sure,
    word_count,
)
from alignkit.models.loading import load_model_and_tokenizer


def answer_matches(response: str, answer, match: str = "auto") -> bool:
    """Does ``response`` give ``answer``? ``answer`` None: the reply must say it is not sure; a list:
    any of its accepted answers. ``auto``: a numeric answer must be the final number, a text answer
    must appear as whole words; either way a reply that hedges does not count."""
    if answer is None:
        return says_not_sure(response)
    if isinstance(answer, list):
        return any(answer_matches(response, accepted, match) for accepted in answer)
    if match == "auto":
        if not _is_number(answer):
            return not says_not_sure(response) and contains_answer(response, answer)
        match = "final_number"
    if match == "final_number":
        return not says_not_sure(response) and final_number(response) == float(str(answer).replace(",", ""))
    if match == "exact":
        return response.strip() == str(answer).strip()
    if match == "normalized":
        return normalize_answer(response) == normalize_answer(answer)
    if match == "contains":
        return contains_answer(response, answer)
    raise ValueError(f"unknown answer match '{match}'")


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value).replace(",", ""))
        return True
    except ValueError:
        return False


class VerifierScorer:
    """Scores answers against a row's known answer, or runs its tests on the code in the answer."""

    name = "verifier"

    def __init__(self, match: str = "auto", code_timeout: float = 5.0, code_memory_mb: int = 512):
        self.match, self.code_timeout, self.code_memory_mb = match, code_timeout, code_memory_mb

    def score_group(self, row: dict, responses: list[str]):
        """Each response's score (1/0, or the fraction of tests passed) and the test results."""
        if row.get("tests"):
            results = [
                run_tests(extract_code(r), row["tests"], self.code_timeout, self.code_memory_mb) for r in responses
            ]
            return [r.fraction for r in results], {"tests": [f"{r.passed}/{r.total} {r.status}" for r in results]}
        return [float(answer_matches(r, row.get("answer"), self.match)) for r in responses], {}


class HeuristicScorer:
    """Scores answers with a rule: shortness, a regex, or a Python function of (row, response)."""

    def __init__(self, kind: str, pattern: str | None = None, function: str | None = None):
        self.name = f"heuristic:{kind}"
        if kind == "length":
            self.fn: Callable[[dict, str], float] = lambda row, response: -float(word_count(response))
        elif kind == "regex":
            if not pattern:
                raise AlignkitError("heuristic 'regex' needs heuristic_pattern")
            compiled = re.compile(pattern)
            self.fn = lambda row, response: float(bool(compiled.search(response)))
        elif kind == "python":
            self.fn = load_function(function)
        else:
            raise AlignkitError(f"unknown heuristic '{kind}' (length, regex or python)")

    def score_group(self, row: dict, responses: list[str]):
        """Each response's score under the rule."""
        return [float(self.fn(row, r)) for r in responses], {}


def load_function(spec: str | None) -> Callable:
    """``path/to/file.py:name`` or ``package.module:name``."""
    if not spec or ":" not in spec:
        raise AlignkitError(
            f"heuristic_function must look like path/to/file.py:function or module:function, got {spec!r}"
        )
    target, _, name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise AlignkitError(f"heuristic_function: {path} does not exist")
            module_spec = importlib.util.spec_from_file_location(f"alignkit_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise AlignkitError(f"heuristic_function: cannot import {target}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise AlignkitError(f"heuristic_function: {target} has no function '{name}'")
    return fn


class BatchRewardFunction:
    """OpenRLHF's custom reward: ``fn(queries, prompts, labels, **kwargs)`` over a whole batch, where a query
    is the formatted prompt followed by the response and a label the row's ``label``; it returns the
    rewards (a list or tensor), or a dict holding them under ``rewards``."""

    def __init__(self, function: str, tokenizer=None, apply_chat_template: bool = True):
        self.fn = load_function(function)
        self.name = f"reward_func:{function}"
        self.tokenizer, self.apply_chat_template = tokenizer, apply_chat_template

    def prompt_text(self, prompt) -> str:
        """The prompt as the policy reads it: the chat template's text when the run applies it."""
        if self.tokenizer is not None and self.apply_chat_template and self.tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)

    def score_batch(self, rows: list[dict], responses: list[str]) -> list[float]:
        """Each response's reward, from one call of the function."""
        prompts = [self.prompt_text(row["prompt"]) for row in rows]
        queries = [prompt + response for prompt, response in zip(prompts, responses)]
        out = self.fn(queries=queries, prompts=prompts, labels=[row.get("label") for row in rows])
        rewards = out["rewards"] if isinstance(out, dict) else out
        values = [float(v) for v in (rewards.tolist() if hasattr(rewards, "tolist") else rewards)]
        if len(values) != len(responses):
            raise AlignkitError(f"{self.name} returned {len(values)} rewards for {len(responses)} responses")
        return values


class RewardModelScorer:
    """Scores answers with a trained reward model, reading them as it was trained to."""

    def __init__(self, model: str, dtype: str = "float32", apply_chat_template: bool = True, normalize: bool = False):
        self.name = f"reward_model:{model}"
        self.model, self.tokenizer = load_model_and_tokenizer(model, dtype, reward_head=True)
        self.model.eval()
        self.apply_chat_template = apply_chat_template
        self.autocast = nullcontext
        mean, std = (getattr(self.model.config, key, None) for key in ("mean", "std"))  # OpenRLHF's stored statistics
        self.shift, self.scale = (float(mean), float(std)) if normalize and mean is not None and std else (0.0, 1.0)

    def to(self, device, autocast=nullcontext) -> RewardModelScorer:
        """Score on ``device`` under ``autocast()`` (an RL run's device and precision)."""
        self.model.to(device)
        self.autocast = autocast
        return self

    def score_batch(self, rows: list[dict], responses: list[str], batch_size: int = 16) -> list[float]:
        """Each (row, response)'s reward-model score, ``batch_size`` sequences per forward (right-padded;
        the head reads each sequence's own last token, as on the sequence alone)."""
        templated = self.apply_chat_template and bool(self.tokenizer.chat_template)
        texts = [reward_text(self.tokenizer, r["prompt"], t, self.apply_chat_template) for r, t in zip(rows, responses)]
        ids = [self.tokenizer(t, add_special_tokens=not templated)["input_ids"] for t in texts]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        with torch.no_grad(), self.autocast():
            for start in range(0, len(ids), batch_size):
                chunk = ids[start : start + batch_size]
                last = [len(s) - 1 for s in chunk]  # a start to satisfy the layout; the head reads last_token
                batch = build_sequence_batch(chunk, last, self.tokenizer.pad_token_id, "right")
                scores += sequence_scores(self.model, to_device(batch, device)).tolist()
        return [(score - self.shift) / self.scale for score in scores]

    def score_group(self, row: dict, responses: list[str]):
        """Each response's reward-model score."""
        return self.score_batch([row] * len(responses), responses), {}


class JudgeScorer:
    """``pairwise``: round-robin, each comparison position-swapped; a win counts 1, a tie 0.5.
    ``single``: the judge's 1-10 grade of each response."""

    def __init__(self, judge, mode: str = "pairwise"):
        self.judge, self.mode = judge, mode
        self.name = f"judge:{judge.client.settings.model}:{mode}"

    def score_group(self, row: dict, responses: list[str]):
        """Each response's score: its judge grade, or its share of pairwise wins against the others."""
        if self.mode == "single":
            grades = [self.judge.grade(row["prompt"], r) for r in responses]
            return grades, {"grades": grades}
        wins = [0.0] * len(responses)
        verdicts, inconsistent = {}, 0
        for i, j in itertools.combinations(range(len(responses)), 2):
            result = self.judge.compare(row["prompt"], responses[i], responses[j])
            verdicts[f"{i}-{j}"] = result.verdicts
            inconsistent += not result.consistent
            if result.winner == "first":
                wins[i] += 1
            elif result.winner == "second":
                wins[j] += 1
            else:
                wins[i] += 0.5
                wins[j] += 0.5
        return wins, {"verdicts": verdicts, "inconsistent": inconsistent}


class LengthPenalized:
    """``score - penalty x words``: among equally good answers, the concise one wins."""

    def __init__(self, scorer, penalty: float):
        self.scorer, self.penalty, self.name = scorer, penalty, f"{scorer.name}-{penalty}/word"

    def score_group(self, row: dict, responses: list[str]):
        """The wrapped scores minus ``penalty`` x each response's word count."""
        scores, detail = self.scorer.score_group(row, responses)
        return [s - self.penalty * word_count(r) for s, r in zip(scores, responses)], detail
