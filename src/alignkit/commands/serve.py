"""``alignkit serve``: an OpenAI-compatible HTTP endpoint over a local model or alignkit run directory.

``GET /v1/models`` and ``POST /v1/chat/completions`` (temperature, top_p, max_tokens /
max_completion_tokens, n, stop, seed, logprobs/top_logprobs, stream), on FastAPI + uvicorn, bound
to 127.0.0.1 by default. One model, one request generating at a time. Errors use OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``), so clients report them properly.

``serving(model)`` runs the same server in a background thread and yields its base URL: the way to
judge with a local model, or generate pairs with it, from Python.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from transformers import TextIteratorStreamer

from alignkit.configs import ServeConfig
from alignkit.data.tokenize import prompt_token_ids
from alignkit.errors import ConfigError, require
from alignkit.models.loading import load_model_and_tokenizer


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request."""

    role: str
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    """The fields of an OpenAI ``/v1/chat/completions`` request that alignkit serves."""

    model: str
    messages: list[ChatMessage] = Field(..., min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False


class APIError(Exception):
    """An error answered in OpenAI's JSON error shape, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _text(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


class ChatModel:
    """Generation behind the endpoint: chat template, sampling, stop strings, log-probs."""

    def __init__(self, model, tokenizer, name: str, max_new_tokens_limit: int = 1024):
        self.model, self.tokenizer, self.name, self.limit = model.eval(), tokenizer, name, max_new_tokens_limit
        self.lock = threading.Lock()

    def prepare(self, request: ChatRequest) -> dict:
        """Validate ``request`` against this model and turn it into ``generate()`` arguments (raises
        :class:`APIError`)."""
        if request.model != self.name:
            raise APIError(
                404,
                f"model '{request.model}' is not served here; this endpoint serves '{self.name}'",
                param="model",
                code="model_not_found",
            )
        messages = [{"role": m.role, "content": _text(m.content)} for m in request.messages]
        ids = prompt_token_ids(self.tokenizer, messages, True)
        max_new = min(request.max_completion_tokens or request.max_tokens or self.limit, self.limit)
        sampling = (
            {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
            if request.temperature > 0
            else {"do_sample": False}
        )
        inputs = torch.tensor([ids], device=self.model.device)
        return {
            "input_ids": inputs,
            "attention_mask": torch.ones_like(inputs),
            "max_new_tokens": max_new,
            "num_return_sequences": request.n,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            **sampling,
        }

    @torch.no_grad()
    def complete(self, request: ChatRequest) -> dict:
        """Answer ``request`` (one generation at a time); returns the OpenAI chat completion object."""
        kwargs = self.prepare(request)
        prompt_len = kwargs["input_ids"].shape[1]
        with self.lock:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            out = self.model.generate(**kwargs, return_dict_in_generate=True, output_logits=request.logprobs)
        stops = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
        choices, completion_tokens = [], 0
        for k in range(request.n):
            tokens = out.sequences[k, prompt_len:].tolist()
            finish = "length"
            if self.tokenizer.eos_token_id in tokens:
                tokens, finish = tokens[: tokens.index(self.tokenizer.eos_token_id)], "stop"
            completion_tokens += len(tokens)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = min((text.find(s) for s in stops if s and s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            choice: dict[str, Any] = {
                "index": k,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
            if request.logprobs:
                choice["logprobs"] = {"content": self._logprobs(out.logits, k, tokens, request.top_logprobs or 0)}
            choices.append(choice)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_len,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_len + completion_tokens,
            },
        }

    def _logprobs(self, logits, k: int, tokens: list[int], top: int) -> list[dict]:
        entries = []
        for step, token in enumerate(tokens):
            logp = torch.log_softmax(logits[step][k].float(), dim=-1)
            best = torch.topk(logp, top) if top else None
            entries.append(
                {
                    **self._token_entry(token, logp[token].item()),
                    "top_logprobs": [
                        self._token_entry(i, v) for v, i in zip(best.values.tolist(), best.indices.tolist())
                    ]
                    if best is not None
                    else [],
                }
            )
        return entries

    def _token_entry(self, token_id: int, logprob: float) -> dict:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def stream(self, request: ChatRequest):
        """Server-sent events: a role chunk, content chunks as tokens arrive, a finish chunk, [DONE]."""
        if request.n != 1 or request.logprobs:
            raise APIError(400, "streaming supports n=1 without logprobs", param="stream")
        kwargs = self.prepare(request)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def event(delta: dict, finish: str | None = None) -> str:
            body = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(body)}\n\n"

        def events():
            with self.lock:
                if request.seed is not None:
                    torch.manual_seed(request.seed)
                worker = threading.Thread(
                    target=torch.no_grad()(self.model.generate), kwargs={**kwargs, "streamer": streamer}, daemon=True
                )
                worker.start()
                yield event({"role": "assistant", "content": ""})
                for piece in streamer:
                    if piece:
                        yield event({"content": piece})
                worker.join()
            yield event({}, "stop")
            yield "data: [DONE]\n\n"

        return events()


def build_app(chat: ChatModel, api_key: str | None = None):
    """The FastAPI application serving ``chat``."""
    fastapi = require("fastapi", "data", "alignkit serve")
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    app = fastapi.FastAPI(title="alignkit serve", version="1")

    @app.exception_handler(APIError)
    async def _api_error(_, exc: APIError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse(APIError(400, f"{param}: {first['msg']}", param=param or None).body, status_code=400)

    def check_key(authorization: str | None) -> None:
        if api_key is not None and authorization != f"Bearer {api_key}":
            raise APIError(
                401,
                "missing or wrong API key (send 'Authorization: Bearer <key>')",
                kind="authentication_error",
                code="invalid_api_key",
            )

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": chat.name}

    @app.get("/v1/models")
    def models(authorization: str | None = fastapi.Header(None)) -> dict:
        check_key(authorization)
        return {"object": "list", "data": [{"id": chat.name, "object": "model", "created": 0, "owned_by": "alignkit"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest, authorization: str | None = fastapi.Header(None)):
        check_key(authorization)
        if request.stream:
            return StreamingResponse(chat.stream(request), media_type="text/event-stream")
        return chat.complete(request)

    return app


def load_chat_model(config: ServeConfig) -> ChatModel:
    """The model and tokenizer ``alignkit serve`` answers with, under the name clients ask for."""
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype)
    name = config.served_model_name or (
        config.model if config.model == "embedded" else Path(config.model).resolve().name
    )
    return ChatModel(model, tokenizer, name, config.max_new_tokens_limit)


def _api_key(config: ServeConfig) -> str | None:
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ConfigError(f"api_key_env: the environment variable {config.api_key_env} is not set")
    return key


def serve(config: ServeConfig) -> None:
    """Run the endpoint until interrupted."""
    uvicorn = require("uvicorn", "data", "alignkit serve")
    chat = load_chat_model(config)
    app = build_app(chat, _api_key(config))
    print(f"alignkit serve: '{chat.name}' at http://{config.host}:{config.port}/v1 (OpenAI-compatible; Ctrl+C stops)")
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")


@contextmanager
def run_in_background(app, host: str = "127.0.0.1", port: int = 0):
    """Serve an ASGI ``app`` with uvicorn in a daemon thread; yields the base URL (``http://HOST:PORT/v1``)."""
    uvicorn = require("uvicorn", "data", "alignkit serve")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"could not start a server on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serving(
    model: str | ChatModel = "embedded", host: str = "127.0.0.1", port: int = 0, api_key: str | None = None, **config
):
    """``alignkit serve`` in a background thread: yields its base URL. ``model`` is a ChatModel or
    anything ``ServeConfig.model`` accepts (``config`` takes the other ServeConfig fields)."""
    chat = model if isinstance(model, ChatModel) else load_chat_model(ServeConfig(model=model, **config))
    with run_in_background(build_app(chat, api_key), host, port) as url:
        yield url
