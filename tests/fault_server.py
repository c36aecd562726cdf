"""A real HTTP server speaking the OpenAI chat protocol, with faults injected on purpose.

Correct replies come from a rule: a judge prompt gets the verdict naming the answer that contains
"GOOD" ([[A]] or [[B]]; [[tie]] when both or neither do), any other prompt gets "echo: <last user
message>". ``faults`` is a script consumed one per request: "429", "500", "timeout" (sleeps past
the client's timeout), "truncated" (cut-off JSON), "schema" (JSON without choices), "no_verdict"
(a valid reply with no verdict in it), or None (answer correctly). Every request is counted per
conversation, so tests can prove nothing was asked twice.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

ANSWER_RE = re.compile(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\n", re.DOTALL)
GRADED_RE = re.compile(r"\[Answer\]\n(.*?)\n\n", re.DOTALL)


def correct_text(messages: list[dict]) -> str:
    last = messages[-1]["content"]
    graded = GRADED_RE.search(last)
    if graded:
        return "Rating: [[9]]" if "GOOD" in graded.group(1) else "Rating: [[2]]"
    found = ANSWER_RE.search(last)
    if not found:
        return f"echo: {last}"
    a, b = ("GOOD" in found.group(1)), ("GOOD" in found.group(2))
    return "Reasoning done. [[A]]" if a and not b else "Reasoning done. [[B]]" if b and not a else "[[tie]]"


class FaultServer:
    def __init__(self, faults: list | None = None, delay: float = 0.0, timeout_sleep: float = 3.0):
        self.faults, self.delay, self.timeout_sleep = list(faults or []), delay, timeout_sleep
        self.asked: Counter = Counter()
        self.total = 0
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self.app = self._build()

    def _next_fault(self):
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            messages = body["messages"]
            with self._lock:
                self.asked[json.dumps(messages, sort_keys=True)] += 1
                self.total += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._reply(body, messages)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return app

    async def _reply(self, body: dict, messages: list[dict]):
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self._next_fault()
        if fault == "429":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, status_code=429)
        if fault == "500":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep)
        if fault == "truncated":
            return Response('{"id": "x", "object": "chat.completion", "choi', media_type="application/json")
        if fault == "schema":
            return JSONResponse({"id": "x", "object": "chat.completion", "result": "no choices here"})
        text = "I think both are fine." if fault == "no_verdict" else correct_text(messages)
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def judge_rows(n: int) -> list[dict]:
    """Rows to annotate: the GOOD response alternates between A and B."""
    rows = []
    for i in range(n):
        good, bad = f"GOOD answer {i}", f"poor answer {i}"
        a, b = (good, bad) if i % 2 == 0 else (bad, good)
        rows.append({"prompt": f"Question {i}?", "response_a": a, "response_b": b})
    return rows
