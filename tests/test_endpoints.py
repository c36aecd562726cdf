"""Clients, judges and jobs against real HTTP servers on 127.0.0.1: `alignkit serve` over a tiny model,
and a fault-injecting server (429, 500, timeouts, bad JSON, wrong schema) for retries, budget and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import build_model, build_tokenizer
from fault_server import FaultServer, judge_rows

from alignkit.commands.annotate import annotate
from alignkit.commands.serve import ChatModel, run_in_background, serving
from alignkit.configs import AnnotateConfig, EndpointSettings
from alignkit.data.tokenize import ensure_pad_token
from alignkit.engine.generation import generate_responses
from alignkit.judges.client import (
    BudgetExhausted,
    ChatClient,
    EndpointError,
    RequestBudget,
)
from alignkit.judges.generators import EndpointGenerator
from alignkit.judges.llm_judge import LLMJudge
from alignkit.judges.reply_cache import ReplyCache

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def tiny_chat():
    tokenizer = build_tokenizer()
    ensure_pad_token(tokenizer)
    return ChatModel(build_model(len(tokenizer)), tokenizer, "tiny", max_new_tokens_limit=16)


def always_a_chat() -> ChatModel:
    """A tiny model that puts most probability on the token "A" whatever it reads (a judge with
    total position bias): every position's hidden state is the same vector, and only A's
    output row points along it."""
    tokenizer = build_tokenizer()
    ensure_pad_token(tokenizer)
    model = build_model(len(tokenizer), tie=False)
    with torch.no_grad():
        v = torch.linspace(0.5, 1.5, model.config.hidden_size)
        model.model.embed_tokens.weight[:] = v
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("A")] = v
    return ChatModel(model, tokenizer, "always-a", max_new_tokens_limit=4)


def client_for(
    url: str, model: str, cache: ReplyCache | None = None, budget: RequestBudget | None = None, **settings
) -> ChatClient:
    options = {"timeout": 5.0, "backoff_base": 0.0, "max_retries": 6, **settings}
    return ChatClient(EndpointSettings(base_url=url, model=model, **options), cache, budget)


def test_served_greedy_answers_match_local_generation(tiny_chat):
    prompts = ["What is 2 + 3?", "hello world"]
    local = generate_responses(tiny_chat.model, tiny_chat.tokenizer, prompts, max_new_tokens=8, show_progress=False)
    with serving(tiny_chat) as url:
        generator = EndpointGenerator(client_for(url, "tiny"), show_progress=False)
        served = generator.generate(prompts, system_prompt=None, temperature=0.0, max_new_tokens=8)
        assert served == local
        api = openai.OpenAI(base_url=url, api_key="unused")
        assert [m.id for m in api.models.list().data] == ["tiny"]
        streamed = api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": prompts[0]}], max_tokens=8, temperature=0, stream=True
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed).strip() == local[0]
        reply = api.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": prompts[0]}],
            max_tokens=3,
            temperature=0,
            logprobs=True,
            top_logprobs=5,
        )
        with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
            api.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    # The first token's log-prob is the model's own log-softmax at the end of the prompt.
    ids = tiny_chat.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompts[0]}], add_generation_prompt=True, tokenize=False
    )
    input_ids = tiny_chat.tokenizer(ids, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(tiny_chat.model(input_ids).logits[0, -1], -1)
    first = reply.choices[0].logprobs.content[0]
    assert first.logprob == pytest.approx(expected.max().item(), abs=1e-4)
    assert [t.logprob for t in first.top_logprobs] == pytest.approx(expected.topk(5).values.tolist(), abs=1e-4)
    assert reply.usage.completion_tokens == 3


def test_serve_requires_the_key_when_configured(tiny_chat, monkeypatch):
    with serving(tiny_chat, api_key="s3cret") as url:
        budget = RequestBudget(None)
        monkeypatch.setenv("ALIGNKIT_TEST_KEY", "Zq9-not-the-key")
        with pytest.raises(EndpointError, match="HTTP 401") as caught:
            client_for(url, "tiny", budget=budget, api_key_env="ALIGNKIT_TEST_KEY").chat(
                [{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert budget.used == 1  # not retried: a wrong key does not fix itself
        assert "Zq9" not in str(caught.value)  # the key is never echoed
        monkeypatch.setenv("ALIGNKIT_TEST_KEY", "s3cret")
        assert isinstance(
            client_for(url, "tiny", api_key_env="ALIGNKIT_TEST_KEY").chat(
                [{"role": "user", "content": "hi"}], max_tokens=2
            )["text"],
            str,
        )


def test_remote_endpoint_without_key_is_refused(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(EndpointError, match="set the environment variable NO_SUCH_KEY_VAR"):
        client_for("https://api.example.com/v1", "m", api_key_env="NO_SUCH_KEY_VAR")


def test_position_biased_local_judge_gives_inconsistent_ties():
    with serving(always_a_chat()) as url:
        judge = LLMJudge(client_for(url, "always-a"), verdict_from="logprobs")
        result = judge.compare("Which is right?", "2 + 2 = 4", "2 + 2 = 5")
        calibrated = LLMJudge(client_for(url, "always-a"), verdict_from="calibrated_logprobs").compare(
            "Which is right?", "2 + 2 = 4", "2 + 2 = 5"
        )
    assert (result.winner, result.consistent, result.verdicts) == ("tie", False, ["A", "A"])
    assert (judge.comparisons, judge.inconsistent) == (1, 1)
    # Calibrated: P(first wins) is P(A) in one order and 1 - P(A) in the other, so the mean is 0.5 exactly.
    assert (calibrated.winner, calibrated.consistent) == ("tie", False)


def test_retries_ride_out_every_kind_of_fault():
    faults = FaultServer(["429", "500", "timeout", "truncated", "schema", "no_verdict"], timeout_sleep=2.0)
    sleeps: list[float] = []
    with run_in_background(faults.app) as url:
        client = ChatClient(
            EndpointSettings(url, "judge", timeout=0.5, backoff_base=0.01, backoff_max=1.0, max_retries=6),
            sleep=sleeps.append,
        )
        result = LLMJudge(client).compare("Q?", "GOOD answer", "bad answer")
    assert (result.winner, result.consistent) == ("first", True)
    assert client.retries == 6 and faults.total == 8  # six faults, then one good reply per order
    assert all(0 <= s <= min(1.0, 0.01 * 2**k) for k, s in enumerate(sleeps)) and len(sleeps) == 6


def test_gives_up_after_max_retries():
    faults = FaultServer(["500", "500", "500"])
    with run_in_background(faults.app) as url:
        with pytest.raises(EndpointError, match="no valid reply after 3 attempts .*500"):
            client_for(url, "judge", max_retries=2).chat([{"role": "user", "content": "hi"}])


def annotate_config(tmp_path: Path, url: str, n: int = 6, **overrides) -> AnnotateConfig:
    rows = tmp_path / "rows.jsonl"
    if not rows.exists():
        rows.write_text("".join(json.dumps(r) + "\n" for r in judge_rows(n)))
    return AnnotateConfig(
        input=str(rows),
        output=str(tmp_path / "pairs.jsonl"),
        judge_base_url=url,
        judge_model="judge",
        backoff_base=0.0,
        disable_tqdm=True,
        **overrides,
    )


def check_pairs(path: Path, n: int) -> None:
    pairs = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(p["prompt"] for p in pairs) == sorted(f"Question {i}?" for i in range(n))  # every row exactly once
    assert all(p["chosen"].startswith("GOOD") and p["rejected"].startswith("poor") for p in pairs)


def test_budget_stops_the_job_and_a_rerun_resumes_from_the_cache(tmp_path):
    faults = FaultServer()
    with run_in_background(faults.app) as url:
        with pytest.raises(
            BudgetExhausted, match=r"budget \(5 requests\).*replies are saved in .*pairs.jsonl.cache.jsonl"
        ):
            annotate(annotate_config(tmp_path, url, request_budget=5, max_concurrency=1))
        assert not (tmp_path / "pairs.jsonl").exists()
        report = annotate(annotate_config(tmp_path, url))
    check_pairs(tmp_path / "pairs.jsonl", 6)
    assert report["cache_hits"] == 5 and report["requests"] == 7 and report["judge_inconsistent"] == 0
    assert set(faults.asked.values()) == {1} and faults.total == 12  # nothing paid for twice


def test_killed_job_restarts_and_completes_every_row_once(tmp_path):
    faults = FaultServer(["500", "429"] * 3, delay=0.05)
    n = 40
    with run_in_background(faults.app) as url:
        config = annotate_config(tmp_path, url, n=n, max_concurrency=2)
        args = [
            sys.executable,
            "-m",
            "alignkit",
            "annotate",
            "--input",
            config.input,
            "--output",
            config.output,
            "--judge_base_url",
            url,
            "--judge_model",
            "judge",
            "--max_concurrency",
            "2",
            "--backoff_base",
            "0",
            "--disable_tqdm",
        ]
        job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        cache = Path(config.cache_path())
        deadline = time.time() + 60
        while time.time() < deadline and (not cache.exists() or cache.read_text().count("\n") < 20):
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        cached_at_kill = len(ReplyCache(cache))
        assert 20 <= cached_at_kill < 2 * n and not Path(config.output).exists()
        asked_before = faults.total
        report = annotate(config)
    check_pairs(Path(config.output), n)
    assert report["cache_hits"] >= cached_at_kill
    assert (
        faults.total - asked_before - report["retries"] == 2 * n - cached_at_kill
    )  # exactly what was not cached is asked again
    assert (
        sum(count - 1 for count in faults.asked.values()) <= 2 + 6
    )  # repeats: the requests in flight at the kill and the retried faults


def test_single_grades_and_bounded_concurrency(tmp_path):
    from alignkit.judges.scorers import JudgeScorer

    faults = FaultServer(delay=0.05)
    with run_in_background(faults.app) as url:
        scorer = JudgeScorer(LLMJudge(client_for(url, "judge")), mode="single")
        assert scorer.score_group({"prompt": "Q?"}, ["GOOD one", "poor one"]) == ([9.0, 2.0], {"grades": [9.0, 2.0]})
        faults.max_in_flight = 0
        annotate(annotate_config(tmp_path, url, n=12, max_concurrency=3))
    check_pairs(tmp_path / "pairs.jsonl", 12)
    assert faults.max_in_flight == 3  # three at a time: used, never exceeded


def test_serving_a_lora_run_directory_serves_the_merged_model(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.models.loading import apply_lora

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ensure_pad_token(tokenizer)
    lora = apply_lora(base, 4, 8, 0.0, "all-linear")
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a non-trivial adapter
    run_dir = tmp_path / "run"
    lora.save_pretrained(run_dir / "final")
    tokenizer.save_pretrained(run_dir / "final")
    merged = lora.merge_and_unload().eval()
    expected = generate_responses(merged, tokenizer, ["What is 2 + 3?"], max_new_tokens=6, show_progress=False)
    with serving(str(run_dir), served_model_name="aligned") as url:
        served = EndpointGenerator(client_for(url, "aligned"), show_progress=False).generate(
            ["What is 2 + 3?"], system_prompt=None, temperature=0.0, max_new_tokens=6
        )
    assert served == expected
