"""Rewards for RL: a weighted sum of terms built on the scorers that rank synthetic pairs
(verifier, heuristic length/regex/python, reward model, LLM judge grades)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from alignkit.configs import EndpointSettings
from alignkit.judges import scorers
from alignkit.judges.client import ChatClient
from alignkit.judges.llm_judge import LLMJudge
from alignkit.judges.reply_cache import ReplyCache


class CombinedReward:
    """``__call__(rows, responses) -> (scores [N], components {name: [N]})``."""

    def __init__(self, specs: list, cache_dir: Path | None = None, tokenizer=None, apply_chat_template: bool = True):
        self.formatting = (tokenizer, apply_chat_template)  # how a batched reward function sees the prompts
        self.terms = [(self._name(spec, i), spec.weight, self._scorer(spec, cache_dir)) for i, spec in enumerate(specs)]

    @staticmethod
    def _name(spec, index: int) -> str:
        return spec.kind if spec.kind not in ("regex", "python", "reward_func") else f"{spec.kind}{index}"

    def _scorer(self, spec, cache_dir: Path | None):
        if spec.kind == "reward_func":
            return scorers.BatchRewardFunction(spec.function, *self.formatting)
        if spec.kind == "verifier":
            return scorers.VerifierScorer(spec.answer_match)
        if spec.kind == "length":
            return scorers.HeuristicScorer("length")
        if spec.kind == "regex":
            return scorers.HeuristicScorer("regex", pattern=spec.pattern)
        if spec.kind == "python":
            return scorers.HeuristicScorer("python", function=spec.function)
        if spec.kind == "reward_model":
            return scorers.RewardModelScorer(spec.model, normalize=spec.normalize)
        client = ChatClient(
            EndpointSettings(base_url=spec.base_url, model=spec.model, api_key_env=spec.api_key_env),
            ReplyCache(cache_dir / "judge_cache.jsonl" if cache_dir else None),
        )
        return scorers.JudgeScorer(LLMJudge(client), mode="single")

    def to(self, device, autocast=nullcontext) -> CombinedReward:
        """Run the model-backed terms (reward models) on ``device`` under ``autocast()``."""
        for _, _, scorer in self.terms:
            if hasattr(scorer, "to"):
                scorer.to(device, autocast)
        return self

    def __call__(self, rows: list[dict], responses: list[str]) -> tuple[list[float], dict[str, list[float]]]:
        """Each response's weighted reward, and each term's raw values (a model-backed term scores the
        whole batch at once)."""
        components = {name: [] for name, _, _ in self.terms}
        for name, _, scorer in self.terms:
            if hasattr(scorer, "score_batch"):
                components[name] = [float(v) for v in scorer.score_batch(rows, responses)]
                continue
            for row, response in zip(rows, responses):
                components[name].append(float(scorer.score_group(row, [response])[0][0]))
        scores = [sum(weight * components[name][i] for name, weight, _ in self.terms) for i in range(len(responses))]
        return scores, components
