"""A client for any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, llama.cpp, ``alignkit serve``),
built on the official ``openai`` package.

- The API key is read from an environment variable named in the config; it is never printed,
  logged, cached or written anywhere (only the variable's name is).
- Retries with exponential backoff and full jitter on 429, 5xx, timeouts, lost connections and
  malformed replies (bad JSON, wrong schema, or a reply the caller's parser rejects).
- A request budget counts every HTTP attempt, retries included; when it is spent the job stops
  with a clear error, and everything already answered stays in the reply cache.
- Bounded concurrency: ``map`` runs requests on at most ``max_concurrency`` threads.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from alignkit.configs import EndpointSettings
from alignkit.errors import AlignkitError, require
from alignkit.judges.reply_cache import ReplyCache, request_key


class EndpointError(AlignkitError):
    """The endpoint refused the request for a reason retrying cannot fix, or kept failing."""


class BudgetExhausted(AlignkitError):
    """The request budget is spent; cached replies are kept, so a rerun with a larger budget resumes."""


class MalformedReply(ValueError):
    """A reply that does not parse: retried like a transient failure."""


class RequestBudget:
    """At most ``limit`` HTTP attempts (None: unlimited); thread-safe."""

    def __init__(self, limit: int | None):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self) -> None:
        """Spend one request, or raise :class:`BudgetExhausted` when none is left."""
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                raise BudgetExhausted(f"the request budget ({self.limit} requests) is spent")
            self.used += 1


def _is_local(base_url: str) -> bool:
    host = base_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0")


def resolve_api_key(settings: EndpointSettings) -> str:
    """The key from ``api_key_env``; a local endpoint needs none (a placeholder is sent)."""
    name = settings.api_key_env
    value = os.environ.get(name) if name else None
    if value:
        return value
    if _is_local(settings.base_url):
        return "not-needed"
    raise EndpointError(
        f"no API key for {settings.base_url}: set the environment variable {name or 'OPENAI_API_KEY'} "
        "(alignkit reads the key from the environment only; it never stores it)"
    )


class ChatClient:
    """``chat(messages, ...)`` returns a reply dict ``{"text", "top_logprobs"}``, cached by request."""

    def __init__(
        self,
        settings: EndpointSettings,
        cache: ReplyCache | None = None,
        budget: RequestBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        openai = require("openai", "data", "Talking to an OpenAI-compatible endpoint")
        self.settings, self._sleep = settings, sleep
        self.cache = cache if cache is not None else ReplyCache(None)
        self.budget = budget if budget is not None else RequestBudget(None)
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=settings.base_url, api_key=resolve_api_key(settings), max_retries=0, timeout=settings.timeout
        )
        self.retries = 0
        self.cache_hits = 0
        self._lock = threading.Lock()

    def chat(
        self,
        messages: list[dict],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        top_p: float = 1.0,
        top_logprobs: int | None = None,
        seed: int | None = None,
        parse: Callable[[dict], Any] | None = None,
    ) -> dict:
        """One completion. ``parse(reply)`` may raise MalformedReply to have the request retried."""
        request = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "top_p": top_p,
        }
        if top_logprobs:
            request.update(logprobs=True, top_logprobs=top_logprobs)
        if seed is not None:
            request["seed"] = seed
        key = request_key(request)
        cached = self.cache.get(key)
        if cached is not None:
            with self._lock:
                self.cache_hits += 1
            return cached
        reply = self._ask(request, parse)
        self.cache.put(key, reply)
        return reply

    def _ask(self, request: dict, parse: Callable[[dict], Any] | None) -> dict:
        o = self._openai
        last = "no attempt made"
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
                cap = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (attempt - 1))
                self._sleep(random.uniform(0, cap))  # full jitter
            self.budget.take()
            try:
                reply = _reply_of(self._client.chat.completions.create(**request))
                if parse is not None:
                    parse(reply)
                return reply
            except (
                o.RateLimitError,
                o.InternalServerError,
                o.APITimeoutError,
                o.APIConnectionError,
                o.APIResponseValidationError,
            ) as exc:
                last = f"{type(exc).__name__}: {_short(exc)}"
            except o.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code in (408, 409, 429):
                    last = f"HTTP {exc.status_code}: {_short(exc)}"
                    continue
                raise EndpointError(
                    f"{self.settings.base_url} refused the request (HTTP {exc.status_code}): {_short(exc)}"
                ) from None
            except (MalformedReply, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                last = f"malformed reply: {_short(exc)}"
        raise EndpointError(
            f"{self.settings.base_url}: no valid reply after {self.settings.max_retries + 1} attempts (last: {last})"
        )

    def map(
        self, items: Iterable, fn: Callable[[Any], Any], desc: str = "requests", show_progress: bool = True
    ) -> list:
        """``[fn(item) for item in items]`` on at most ``max_concurrency`` threads, in order.
        On the first error, requests not yet started are cancelled and running ones finish (their
        replies are cached) before the error is raised."""
        items = list(items)
        results: list = [None] * len(items)
        with (
            ThreadPoolExecutor(max_workers=self.settings.max_concurrency) as pool,
            tqdm(total=len(items), desc=desc, disable=not show_progress) as bar,
        ):
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        wait(pending)
                        raise future.exception()
                    results[futures[future]] = future.result()
                    bar.update()
        return results


def _reply_of(completion) -> dict:
    """Text and first-token top log-probs of a chat completion; raises on a wrong schema."""
    if completion is None or not getattr(completion, "choices", None):
        raise MalformedReply("the reply has no choices")
    choice = completion.choices[0]
    text = choice.message.content
    if not isinstance(text, str):
        raise MalformedReply("the reply's message has no text content")
    top = None
    logprobs = getattr(choice, "logprobs", None)
    if logprobs is not None and getattr(logprobs, "content", None):
        top = {entry.token: entry.logprob for entry in logprobs.content[0].top_logprobs}
    return {"text": text, "top_logprobs": top}


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
