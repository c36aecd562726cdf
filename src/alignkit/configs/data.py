"""Configs of the data-building commands: `alignkit pairs`, `alignkit annotate`, `alignkit serve`.

Endpoints are OpenAI-compatible (``base_url`` + ``model``); the API key is read from the
environment variable named by ``*_api_key_env`` and is never stored (local endpoints need none).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alignkit.configs.base import EMBEDDED_MODEL
from alignkit.data.synthetic import BAD_SYSTEM_PROMPT, GOOD_SYSTEM_PROMPT


@dataclass
class EndpointSettings:
    """Where an OpenAI-compatible endpoint is and how to call it (the API key is read from ``api_key_env``)."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 4
    max_retries: int = 6
    timeout: float = 60.0
    backoff_base: float = 1.0
    backoff_max: float = 30.0


class JudgeFields(BaseModel):
    """Fields shared by jobs that may call a judge endpoint."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    cache: str | None = Field(
        None,
        description="Reply cache (JSONL) so an interrupted job resumes without re-asking "
        "(default: next to the output).",
    )
    seed: int = Field(0, description="Seed for sampling and for randomised orders.")
    disable_tqdm: bool = Field(False, description="Hide progress bars.")

    judge_base_url: str | None = Field(
        None, description="Judge endpoint, e.g. http://127.0.0.1:8000/v1 (alignkit serve) or https://api.openai.com/v1."
    )
    judge_model: str | None = Field(None, description="Model name the judge endpoint serves.")
    judge_api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the judge endpoint's API key (not needed for 127.0.0.1).",
    )
    judge_verdict_from: Literal["text", "logprobs", "calibrated_logprobs"] = Field(
        "text",
        description=(
            "Pairwise verdicts from the reply text ([[A]]/[[B]]/[[tie]]), from the "
            "first token's log-probs (P(A) vs P(B); the endpoint must "
            "return logprobs), or calibrated_logprobs: P(first wins) averaged over "
            "both orders, which cancels a small judge's position bias. "
            "With text/logprobs, orders that disagree make a tie."
        ),
    )
    judge_tie_margin: float = Field(
        0.0, ge=0.0, lt=1.0, description="logprob verdicts: call it a tie when the two probabilities are this close."
    )
    judge_max_tokens: int = Field(
        256, ge=1, description="Reply length allowed to the judge (text verdicts and grades)."
    )
    rubric: str | None = Field(
        None,
        description="Judging criteria (default: accurate, concise, calibrated uncertainty, "
        "what the user needs). A path to a text file also works.",
    )

    max_concurrency: int = Field(4, ge=1, description="Requests in flight at once per endpoint.")
    max_retries: int = Field(
        6,
        ge=0,
        description="Retries per request on 429/5xx/timeouts/malformed replies (exponential backoff with jitter).",
    )
    request_timeout: float = Field(60.0, gt=0, description="Seconds before a request times out (and is retried).")
    backoff_base: float = Field(
        1.0, ge=0, description="First retry waits up to this many seconds; each further retry doubles it."
    )
    backoff_max: float = Field(30.0, ge=0, description="Longest wait between retries, in seconds.")
    request_budget: int | None = Field(
        None,
        ge=1,
        description="Stop after this many HTTP requests in all (retries included); cached "
        "replies are kept, so a rerun resumes.",
    )

    def endpoint(self, prefix: str) -> EndpointSettings | None:
        """The settings of the endpoint whose fields start with ``prefix`` (e.g. ``judge``), or None when unset."""
        base_url = getattr(self, f"{prefix}_base_url")
        if not base_url:
            return None
        return EndpointSettings(
            base_url=base_url,
            model=getattr(self, f"{prefix}_model"),
            api_key_env=getattr(self, f"{prefix}_api_key_env"),
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            timeout=self.request_timeout,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
        )

    def cache_path(self) -> str:
        """Where endpoint replies are cached (so a rerun resumes); each job's config says."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _check_judge(self) -> "JudgeFields":
        if self.judge_base_url and not self.judge_model:
            raise ValueError("judge_model is required with judge_base_url (the model name the endpoint serves)")
        return self


class EndpointJobConfig(JudgeFields):
    """A job that writes one output file and may call endpoints."""

    output: str = Field(
        ...,
        description="Where to write the result (JSONL); an existing file is never replaced unless overwrite is true.",
    )
    overwrite: bool = Field(False, description="Replace an existing output file.")

    def cache_path(self) -> str:
        """The reply cache: ``cache``, else ``<output>.cache.jsonl``."""
        return self.cache or f"{self.output}.cache.jsonl"


class ScorerFields(BaseModel):
    """Settings of the scorers (verifier, heuristic, reward model, judge), shared by `pairs` and `eval`."""

    answer_match: Literal["auto", "exact", "normalized", "contains", "final_number"] = Field(
        "auto",
        description="verifier: how a response must match `answer` (auto: final number for "
        "numeric answers, else the answer as whole words in a reply that does "
        "not hedge).",
    )
    code_timeout: float = Field(5.0, gt=0, description="verifier with `tests`: seconds the code may run.")
    code_memory_mb: int = Field(
        512, ge=32, description="verifier with `tests`: address-space limit of the code's process."
    )
    heuristic: Literal["length", "regex", "python"] = Field(
        "length", description="heuristic scorer: shorter wins, a regex match wins, or your function."
    )
    heuristic_pattern: str | None = Field(None, description="heuristic regex: responses matching it score 1, others 0.")
    heuristic_function: str | None = Field(
        None, description="heuristic python: path/to/file.py:fn or module:fn, called fn(row, response) -> float."
    )
    reward_model: str | None = Field(
        None, description="reward_model scorer: an `alignkit reward` output folder or run directory."
    )
    judge_mode: Literal["pairwise", "single"] = Field(
        "pairwise", description="judge scorer: position-swapped pairwise round-robin, or a 1-10 grade per answer."
    )
    length_penalty: float = Field(
        0.0, ge=0.0, description="Subtract this x words from every score, so concise answers win ties."
    )


class PairsConfig(ScorerFields, EndpointJobConfig):
    """`alignkit pairs`: build prompt/chosen/rejected pairs from prompts, with provenance per row."""

    prompts: str = Field(
        ...,
        description="Prompt rows (.jsonl/.json/.parquet): `prompt` (text or messages), "
        "optional `answer` (null: cannot be known), `tests` (Python asserts) "
        "and `reference` (a known-good answer).",
    )
    method: Literal["system_prompt", "sample_rank"] = Field(
        "system_prompt",
        description="system_prompt: chosen under a good system prompt, rejected under a "
        "bad one. sample_rank: num_samples samples per prompt ranked by the "
        "scorer.",
    )
    generator: str = Field(
        EMBEDDED_MODEL,
        description="Local model that writes the responses: a folder, an alignkit run "
        "directory, a hub id or 'embedded' (ignored when generator_base_url is "
        "set).",
    )
    generator_base_url: str | None = Field(
        None, description="Generate through an OpenAI-compatible endpoint instead of a local model."
    )
    generator_model: str | None = Field(None, description="Model name the generator endpoint serves.")
    generator_api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Environment variable holding the generator endpoint's API key."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype of local models.")
    batch_size: int = Field(16, ge=1, description="Prompts per local generation batch.")

    good_system_prompts: list[str] = Field(
        default_factory=lambda: [GOOD_SYSTEM_PROMPT],
        description="system_prompt method: prompts for chosen answers (rotated over the prompts).",
    )
    bad_system_prompts: list[str] = Field(
        default_factory=lambda: [BAD_SYSTEM_PROMPT],
        description="system_prompt method: prompts for rejected answers (rotated over the prompts).",
    )
    chosen_temperature: float = Field(
        0.0, ge=0.0, description="system_prompt method: sampling temperature of chosen answers (0 = greedy)."
    )
    rejected_temperature: float = Field(
        0.7, ge=0.0, description="system_prompt method: sampling temperature of rejected answers."
    )
    chosen_max_new_tokens: int = Field(96, ge=1, description="system_prompt method: token limit of chosen answers.")
    rejected_max_new_tokens: int = Field(
        160, ge=1, description="system_prompt method: token limit of rejected answers."
    )

    num_samples: int = Field(4, ge=2, description="sample_rank method: samples per prompt.")
    temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 0.7, 1.0, 1.3],
        description="sample_rank method: temperature of sample k is temperatures[k mod len].",
    )
    system_prompt: str | None = Field(
        None, description="sample_rank method: system prompt for every sample (None: the model's default)."
    )
    max_new_tokens: int = Field(96, ge=1, description="sample_rank method: token limit per sample.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling for sampled responses.")
    include_reference: bool = Field(True, description="Add a row's `reference` answer as one more candidate.")
    pairing: Literal["best_worst", "all"] = Field(
        "best_worst",
        description="sample_rank method: one pair (best vs worst) per prompt, or every "
        "pair of candidates whose scores differ.",
    )
    min_score_gap: float = Field(1e-9, ge=0.0, description="Candidates closer than this in score count as tied.")

    scorer: Literal["none", "verifier", "heuristic", "reward_model", "judge"] | None = Field(
        None,
        description="Ranks candidates (sample_rank; default verifier) or filters contrast "
        "pairs whose rejected answer scores as high (system_prompt; default "
        "none).",
    )
    max_prompts: int | None = Field(None, ge=1, description="Use only the first N prompts.")

    @model_validator(mode="after")
    def _check_pairs(self) -> "PairsConfig":
        if self.generator_base_url and not self.generator_model:
            raise ValueError("generator_model is required with generator_base_url")
        scorer = self.resolved_scorer
        if scorer == "none" and self.method == "sample_rank":
            raise ValueError("sample_rank needs a scorer (verifier, heuristic, reward_model or judge)")
        if scorer == "judge" and not self.judge_base_url:
            raise ValueError("scorer 'judge' needs judge_base_url and judge_model (e.g. an `alignkit serve` endpoint)")
        if scorer == "reward_model" and not self.reward_model:
            raise ValueError("scorer 'reward_model' needs reward_model (an `alignkit reward` output)")
        if not self.good_system_prompts or not self.bad_system_prompts or not self.temperatures:
            raise ValueError("good_system_prompts, bad_system_prompts and temperatures must not be empty")
        return self

    @property
    def resolved_scorer(self) -> str:
        """The scorer to use: the one set, else the verifier for ``sample_rank`` and none for ``system_prompt``."""
        if self.scorer is not None:
            return self.scorer
        return "verifier" if self.method == "sample_rank" else "none"


class AnnotateConfig(EndpointJobConfig):
    """`alignkit annotate`: turn (prompt, response A, response B) rows into preference pairs with an LLM
    judge (RLAIF), or export a blind sheet for people and import their labels back."""

    input: str = Field(..., description="judge/export: rows with prompt and two responses; import: the labelled sheet.")
    mode: Literal["judge", "export", "import"] = Field(
        "judge",
        description="judge: pairs from a position-swapped judge; export: a blind, "
        "randomised A/B sheet (.csv or .jsonl) plus a key file; import: "
        "labelled sheet + key -> pairs.",
    )
    response_fields: list[str] = Field(
        default_factory=lambda: ["response_a", "response_b"], description="The two response fields of the input rows."
    )
    key: str | None = Field(
        None,
        description="export/import: the key file mapping sheet rows to responses (default: "
        "<sheet>.key.jsonl). Keep it away from annotators.",
    )

    @model_validator(mode="after")
    def _check_annotate(self) -> "AnnotateConfig":
        if self.mode == "judge" and not self.judge_base_url:
            raise ValueError("mode 'judge' needs judge_base_url and judge_model")
        if len(self.response_fields) != 2:
            raise ValueError(f"response_fields must name exactly two fields, got {self.response_fields}")
        return self


class ServeConfig(BaseModel):
    """`alignkit serve`: an OpenAI-compatible endpoint (/v1/chat/completions, /v1/models) over a local model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        EMBEDDED_MODEL,
        description="A model folder, an alignkit run directory (its final/ model, LoRA "
        "merged), a hub id or 'embedded'.",
    )
    served_model_name: str | None = Field(
        None, description="The name clients pass as `model` (default: the folder name, or 'embedded')."
    )
    host: str = Field(
        "127.0.0.1",
        description="Interface to bind; 127.0.0.1 keeps it on this machine (0.0.0.0 exposes it to the network).",
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    max_new_tokens_limit: int = Field(1024, ge=1, description="Cap on max_tokens per request.")
    api_key_env: str | None = Field(
        None, description="If set, requests must send 'Authorization: Bearer <value of this environment variable>'."
    )

    requires_train_data: typing.ClassVar[bool] = False


class LabelConfig(BaseModel):
    """`alignkit label [ACTION] PROJECT_DIR`: people compare answers in a local web app.

    Actions: ``init`` (make a project from rows, a pairs file to audit, or prompts + two models),
    ``add-annotator PROJECT_DIR NAME`` (prints the annotator's token and link), ``serve`` (the
    default: run the app), ``stats`` (agreement, position bias, judge audit) and ``export`` (pairs,
    KTO rows or the review sheet)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    action: Literal["serve", "init", "add-annotator", "stats", "export"] = Field(
        "serve", description="What to do with the project."
    )
    project: str = Field(..., description="The project folder.")
    # serve
    host: str = Field(
        "127.0.0.1",
        description="Interface to bind; 127.0.0.1 keeps the app on this machine, 0.0.0.0 shares it on the network.",
    )
    port: int = Field(8765, ge=0, le=65535, description="TCP port.")
    # init
    rows: str | None = Field(
        None,
        description="init: (prompt, response_a, response_b) rows (compare), (prompt, completion) rows (thumbs), "
        "or a pairs file (prompt, chosen, rejected) whose judge labels are to be audited.",
    )
    prompts: str | None = Field(None, description="init: prompt rows; answers are generated by model_a and model_b.")
    model_a: str | None = Field(
        None,
        description="init with prompts: the first model or run directory (default: "
        "model_b's base); for review, the reference.",
    )
    model_b: str | None = Field(
        None, description="init with prompts: the second model or run directory; for review, the aligned model."
    )
    max_new_tokens: int = Field(128, ge=1, description="init with prompts: tokens per generated answer.")
    kind: Literal["compare", "thumbs", "review"] = Field(
        "compare", description="init: compare two answers blind, thumbs up/down on one, or review reference vs aligned."
    )
    scale: Literal["binary", "tie", "five"] = Field(
        "tie", description="init, compare: A/B, A/B/tie, or a five-point scale."
    )
    rubric: str | None = Field(
        None,
        description="init: the rubric, as markdown text or a .md file (default: correct, then helpful, then concise).",
    )
    overlap: int = Field(1, ge=1, description="init: annotators per item (for agreement statistics use 2 or more).")
    seed: int = Field(0, description="init: seeds the blind A/B order and item orders.")
    name: str | None = Field(
        None, description="init: the project's name (default: the folder name); add-annotator: the annotator's name."
    )
    overwrite: bool = Field(False, description="init / export: replace an existing project or output file.")
    # export / stats
    output: str | None = Field(
        None,
        description="export: the file to write (pairs or KTO rows as JSONL; review: a markdown sheet, HTML beside it).",
    )
    ties: Literal["drop", "keep"] = Field(
        "drop", description="export, compare: drop items whose majority is a tie, or keep them in <output>.ties.jsonl."
    )
    json_output: bool = Field(False, description="stats: print JSON instead of a table.")

    requires_train_data: typing.ClassVar[bool] = False
