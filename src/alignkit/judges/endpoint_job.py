"""What every endpoint-calling job shares: one reply cache and one request budget for all its
clients, the judge and scorer it asks for, and errors that say how to resume."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from alignkit.errors import AlignkitError, RunDirError
from alignkit.judges import scorers
from alignkit.judges.client import (
    BudgetExhausted,
    ChatClient,
    EndpointError,
    EndpointSettings,
    RequestBudget,
)
from alignkit.judges.llm_judge import DEFAULT_RUBRIC, LLMJudge
from alignkit.judges.reply_cache import ReplyCache


def refuse_existing(path: str | Path, overwrite: bool) -> Path:
    """``path``, refusing an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RunDirError(
            f"{path} already exists; nothing was changed. Pass --overwrite to replace it or choose another --output"
        )
    return path


def load_rubric(rubric: str | None) -> str:
    """The rubric text; a value naming an existing file is read from it."""
    if not rubric:
        return DEFAULT_RUBRIC
    path = Path(rubric)
    if len(rubric) < 400 and "\n" not in rubric and path.is_file():
        return path.read_text(encoding="utf-8").strip()
    return rubric


class EndpointJob:
    """What a job that calls endpoints shares: the reply cache, the request budget, its clients and judge."""

    def __init__(self, config):
        self.config = config
        self.cache = ReplyCache(config.cache_path())
        self.budget = RequestBudget(config.request_budget)
        self.clients: list[ChatClient] = []
        self._judge: LLMJudge | None = None

    def client(self, settings: EndpointSettings) -> ChatClient:
        """A client of ``settings`` sharing the job's cache and budget."""
        client = ChatClient(settings, self.cache, self.budget)
        self.clients.append(client)
        return client

    def judge(self) -> LLMJudge:
        """The job's LLM judge (made once from the ``judge_*`` fields)."""
        if self._judge is None:
            settings = self.config.endpoint("judge")
            if settings is None:
                raise AlignkitError("this job needs a judge: set judge_base_url and judge_model")
            self._judge = LLMJudge(
                self.client(settings),
                load_rubric(self.config.rubric),
                self.config.judge_verdict_from,
                self.config.judge_max_tokens,
                self.config.judge_tie_margin,
            )
        return self._judge

    def scorer(self, kind: str, config):
        """The scorer of ``kind`` (verifier, heuristic, reward model or judge), with its length penalty if any."""
        if kind == "verifier":
            scorer = scorers.VerifierScorer(config.answer_match, config.code_timeout, config.code_memory_mb)
        elif kind == "heuristic":
            scorer = scorers.HeuristicScorer(config.heuristic, config.heuristic_pattern, config.heuristic_function)
        elif kind == "reward_model":
            scorer = scorers.RewardModelScorer(config.reward_model, config.dtype)
        elif kind == "judge":
            scorer = scorers.JudgeScorer(self.judge(), config.judge_mode)
        else:
            raise AlignkitError(f"unknown scorer '{kind}'")
        return scorers.LengthPenalized(scorer, config.length_penalty) if config.length_penalty else scorer

    @contextmanager
    def guard(self):
        """Endpoint failures stop the job with a message saying what is saved and how to resume."""
        try:
            yield
        except (BudgetExhausted, EndpointError) as exc:
            raise type(exc)(
                f"{exc}. {len(self.cache)} replies are saved in {self.cache.path}; rerun the same command "
                f"(with a larger request_budget if the budget ran out) to continue without asking them again"
            ) from None

    def stats(self) -> dict:
        """Requests spent, cache hits, and the judge's comparison counts."""
        judged = (
            {}
            if self._judge is None
            else {"judge_comparisons": self._judge.comparisons, "judge_inconsistent": self._judge.inconsistent}
        )
        return {
            **judged,
            "requests": self.budget.used,
            "retries": sum(c.retries for c in self.clients),
            "cache_hits": sum(c.cache_hits for c in self.clients),
        }
