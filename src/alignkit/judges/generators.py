"""Response generators for building preference data: a local model (batched ``transformers``
generation) or any OpenAI-compatible endpoint. Both answer ``generate(prompts, ...)`` the same way.

Sampling is seeded per call (``seed``), so the same job gives the same samples; for endpoints the
seed is also part of each request's cache key, so a resumed job reuses what it already paid for.
"""

from __future__ import annotations

from typing import Protocol

import torch

from alignkit.data.tokenize import as_messages
from alignkit.engine.generation import generate_responses
from alignkit.judges.client import ChatClient
from alignkit.models.loading import load_model_and_tokenizer


class Generator(Protocol):
    """Anything that answers prompts: a local model or an OpenAI-compatible endpoint."""

    name: str

    def generate(
        self,
        prompts: list,
        *,
        system_prompt: str | None,
        temperature: float,
        max_new_tokens: int,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        """One answer per prompt (with an optional system prompt), sampled at ``temperature``."""
        ...


class LocalGenerator:
    """A local model or run directory (``final/`` of a run, LoRA adapters merged), generating in batches."""

    def __init__(self, model: str, dtype: str = "float32", batch_size: int = 16, show_progress: bool = True):
        self.name = f"local:{model}"
        self.model, self.tokenizer = load_model_and_tokenizer(model, dtype)
        self.model.eval()
        self.batch_size, self.show_progress = batch_size, show_progress

    def generate(
        self,
        prompts: list,
        *,
        system_prompt: str | None,
        temperature: float,
        max_new_tokens: int,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        """Answers from the local model, seeded."""
        torch.manual_seed(seed)
        return generate_responses(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens,
            self.batch_size,
            system_prompt=system_prompt,
            temperature=temperature,
            top_p=top_p,
            desc=f"generating (T={temperature})",
            show_progress=self.show_progress,
        )


class EndpointGenerator:
    """Any OpenAI-compatible chat endpoint; requests run concurrently, retried and cached by the client."""

    def __init__(self, client: ChatClient, show_progress: bool = True):
        self.client, self.show_progress = client, show_progress
        self.name = f"endpoint:{client.settings.model}"

    def generate(
        self,
        prompts: list,
        *,
        system_prompt: str | None,
        temperature: float,
        max_new_tokens: int,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        """Answers from the endpoint, requested concurrently (and cached)."""

        def one(prompt) -> str:
            messages = as_messages(prompt)
            if system_prompt is not None:
                messages = [{"role": "system", "content": system_prompt}] + [
                    m for m in messages if m["role"] != "system"
                ]
            reply = self.client.chat(
                messages, temperature=temperature, max_tokens=max_new_tokens, top_p=top_p, seed=seed
            )
            return reply["text"].strip()

        return self.client.map(prompts, one, desc=f"generating (T={temperature})", show_progress=self.show_progress)
