"""Judging, scoring and ranking logic, and the code sandbox, tested directly on known inputs."""

from __future__ import annotations

import json
import math

import pytest

from alignkit.data.synthetic import Candidate, PairBuildSummary, pairs_from_scores
from alignkit.judges.client import MalformedReply
from alignkit.judges.llm_judge import (
    PairwiseResult,
    calibrated_result,
    combine_swapped,
    parse_logprob_verdict,
    parse_rating,
    parse_text_verdict,
    prob_first_letter,
    render_prompt,
)
from alignkit.judges.reply_cache import ReplyCache
from alignkit.judges.sandbox import extract_code, run_tests
from alignkit.judges.scorers import (
    HeuristicScorer,
    JudgeScorer,
    LengthPenalized,
    VerifierScorer,
    answer_matches,
    normalize_answer,
)


@pytest.mark.parametrize(
    "first,second,winner,consistent",
    [
        ("A", "B", "first", True),  # x first: A=x; y first: B=x  -> x both times
        ("B", "A", "second", True),  # y both times
        ("A", "A", "tie", False),  # always the first position: position bias
        ("B", "B", "tie", False),  # always the second position
        ("tie", "tie", "tie", True),
        ("A", "tie", "tie", False),  # a win in one order only
    ],
)
def test_position_swap_combination(first, second, winner, consistent):
    result = combine_swapped(first, second)
    assert (result.winner, result.consistent, result.verdicts) == (winner, consistent, [first, second])


@pytest.mark.parametrize(
    "p_as_a,p_as_b,margin,winner,consistent",
    [
        (0.8, 0.4, 0.0, "first", False),  # mean 0.6: first wins though the orders disagree (position bias averaged out)
        (0.7, 0.7, 0.0, "first", True),
        (0.3, 0.6, 0.0, "second", False),  # mean 0.45
        (0.55, 0.43, 0.05, "tie", False),  # mean 0.49: within 0.05 / 2 of 0.5
        (0.6, 0.48, 0.05, "first", False),  # mean 0.54: beyond 0.05 / 2 of 0.5, a win
        (0.9, 0.1, 0.0, "tie", False),  # pure position bias: mean 0.5
    ],
)
def test_balanced_position_calibration(p_as_a, p_as_b, margin, winner, consistent):
    result = calibrated_result(p_as_a, p_as_b, margin)
    assert (result.winner, result.consistent) == (winner, consistent)


def test_text_verdicts():
    assert parse_text_verdict("A is longer but [[B]] is right. Final: [[A]]") == "A"  # the last verdict counts
    assert parse_text_verdict("[[ tie ]]") == "tie"
    assert parse_text_verdict("B. It is correct.") == "B"
    assert parse_text_verdict("Answer A is better") == "A"
    for bad in ("Both are good.", "AAAA", ""):
        with pytest.raises(MalformedReply):
            parse_text_verdict(bad)


def test_a_conversation_reaches_the_judge_as_role_lines():
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    assert render_prompt(conversation) == "system: Be brief.\nuser: What is 2 + 3?"
    assert render_prompt("What is 2 + 3?") == "What is 2 + 3?"


def test_logprob_verdicts():
    # mass on "A"-like tokens: e^-1 + e^-3 = 0.418; on "B": e^-0.9 = 0.407
    assert parse_logprob_verdict({"A": -1.0, " a": -3.0, "B": -0.9, "x": -0.1}) == "A"
    assert parse_logprob_verdict({"A": -2.0, "B": -0.5}) == "B"
    assert parse_logprob_verdict({"A": -1.0, "B": -1.0}) == "tie"  # equal mass is a tie even with no margin
    assert (
        parse_logprob_verdict({"A": math.log(0.5), "B": math.log(0.45)}, tie_margin=0.1) == "tie"
    )  # |0.05| <= 0.1 x 0.95
    with pytest.raises(MalformedReply):
        parse_logprob_verdict({"x": -0.1, "y": -2.0})
    with pytest.raises(MalformedReply):
        parse_logprob_verdict(None)
    # the calibrated judge's P(first letter is A), renormalised over A and B: 0.3 / (0.3 + 0.1); "C" is ignored
    assert prob_first_letter({"A": math.log(0.3), " [b": math.log(0.1), "C": math.log(0.6)}) == pytest.approx(0.75)


def test_ratings():
    assert parse_rating("Good. Rating: [[8]]") == 8.0
    assert parse_rating("rating: 3.5") == 3.5
    assert (parse_rating("[[1]]"), parse_rating("[[10]]")) == (1.0, 10.0)  # the scale's ends are ratings
    for bad in ("Rating: [[11]]", "Rating: [[0]]", "great answer"):
        with pytest.raises(MalformedReply):
            parse_rating(bad)


def test_answer_matching():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert answer_matches("12 + 9 = 21.", 21)  # auto: final number
    assert not answer_matches("It is 21, or maybe 22.", 21)  # the final number counts
    assert not answer_matches("I'm not sure, maybe 21", 21)  # hedging is not an answer
    assert answer_matches("I'm not sure.", None)  # null answer: cannot be known
    assert not answer_matches("It is 4.", None)
    assert answer_matches("the eiffel tower", "The Eiffel Tower.")  # auto: normalised text ...
    assert answer_matches("It is the Eiffel Tower, in Paris.", "Eiffel Tower")  # ... as whole words in a longer reply
    assert not answer_matches("I'm not sure, maybe the Eiffel Tower?", "Eiffel Tower")  # a hedge is not an answer
    assert not answer_matches("Oslofjord", "Oslo")
    assert answer_matches("Insects have 6 legs.", ["six", "6"]) and not answer_matches(
        "Insects have 8 legs.", ["six", "6"]
    )  # any accepted answer
    assert not answer_matches("The Eiffel Tower.", "The Eiffel Tower", match="exact")
    assert answer_matches("It is the Eiffel Tower, in Paris.", "eiffel tower", match="contains")
    assert not answer_matches("Eiffel Towers", "eiffel tower", match="contains")


def test_the_other_answer_matches_and_user_functions(tmp_path):
    from alignkit.errors import AlignkitError
    from alignkit.judges.scorers import load_function

    assert answer_matches("  The Eiffel tower! ", "the eiffel Tower", match="normalized")
    assert not answer_matches("The Eiffel Tower, in Paris.", "Eiffel Tower", match="normalized")
    with pytest.raises(ValueError, match="unknown answer match 'fuzzy'"):
        answer_matches("7", 7, match="fuzzy")
    assert answer_matches("That is true.", True) and not answer_matches("1", True)  # a bool is a word, not 1
    assert answer_matches("About 1,250 people.", "1,250") and not answer_matches("About 1250.5 people.", 1250)
    assert load_function("json:dumps") is json.dumps
    for spec, message in [
        (None, "must look like path/to/file.py:function or module:function, got None"),
        ("score.py", "must look like"),
        (f"{tmp_path / 'none.py'}:score", "none.py does not exist"),
        ("json:no_such_function", "json has no function 'no_such_function'"),
        ("alignkit_no_such_module:score", "cannot import alignkit_no_such_module"),
    ]:
        with pytest.raises(AlignkitError, match=message):
            load_function(spec)


def test_verifier_and_heuristics_rank(tmp_path):
    verifier = VerifierScorer()
    assert verifier.score_group({"answer": 7}, ["3 + 4 = 7.", "It is 8."])[0] == [1.0, 0.0]
    length = HeuristicScorer("length")
    assert length.score_group({}, ["one two three", "one"])[0] == [-3.0, -1.0]
    regex = HeuristicScorer("regex", pattern=r"^\d+$")
    assert regex.score_group({}, ["42", "forty-two"])[0] == [1.0, 0.0]
    (tmp_path / "mine.py").write_text("def score(row, response):\n    return len(row['prompt']) - len(response)\n")
    custom = HeuristicScorer("python", function=f"{tmp_path / 'mine.py'}:score")
    assert custom.score_group({"prompt": "abcd"}, ["ab", "abcdef"])[0] == [2.0, -2.0]
    penalized = LengthPenalized(verifier, 0.1)
    scores, _ = penalized.score_group({"answer": 7}, ["7", "the answer is 7"])
    assert scores == pytest.approx([0.9, 0.6])


class ScriptedJudge:
    """A stand-in judge (no endpoint): prefers the shorter answer, ties on equal length."""

    class client:  # noqa: N801 - mimics LLMJudge.client.settings.model
        class settings:
            model = "scripted"

    def compare(self, prompt, first, second):
        if len(first) == len(second):
            return PairwiseResult("tie", False, ["A", "A"])
        return PairwiseResult("first" if len(first) < len(second) else "second", True, ["A", "B"])

    def grade(self, prompt, response):
        return 10.0 - len(response)


def test_judge_round_robin_counts_wins_and_ties():
    scores, detail = JudgeScorer(ScriptedJudge()).score_group({"prompt": "q"}, ["aa", "a", "bbb", "cc"])
    # "a" beats all 3; "aa" beats "bbb", ties "cc"; "cc" beats "bbb", ties "aa"; "bbb" loses all
    assert scores == [1.5, 3.0, 0.0, 1.5]
    assert detail["inconsistent"] == 1 and set(detail["verdicts"]) == {"0-1", "0-2", "0-3", "1-2", "1-3", "2-3"}
    single = JudgeScorer(ScriptedJudge(), mode="single")
    assert single.name == "judge:scripted:single"
    assert single.score_group({"prompt": "q"}, ["aa", "a"]) == ([8.0, 9.0], {"grades": [8.0, 9.0]})


def test_pairs_from_scores_pairing_and_drops():
    candidates = [Candidate(t, f"s{i}") for i, t in enumerate(["w", "x", "y", "z"])]
    summary = PairBuildSummary()
    best_worst = pairs_from_scores("p", candidates, [0.5, 1.0, 0.5, 0.0], summary)
    assert [(r["chosen"], r["rejected"]) for r in best_worst] == [("x", "z")]
    all_pairs = pairs_from_scores("p", candidates, [0.5, 1.0, 0.5, 0.0], summary, pairing="all")
    assert [(r["chosen"], r["rejected"]) for r in all_pairs] == [
        ("x", "w"),
        ("x", "y"),
        ("x", "z"),
        ("w", "z"),
        ("y", "z"),
    ]
    assert pairs_from_scores("p", candidates, [1.0] * 4, summary) == []
    assert pairs_from_scores("p", candidates[:1], [1.0], summary) == []
    assert summary.kept == 6
    assert dict(summary.dropped) == {
        "ties (all candidates scored the same)": 1,
        "with fewer than two distinct candidates": 1,
    }
    assert best_worst[0]["provenance"]["scores"] == {"s1": 1.0, "s0": 0.5, "s2": 0.5, "s3": 0.0}


def test_reply_cache_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ReplyCache(path)
    cache.put("k1", {"text": "one"})
    with path.open("a") as handle:
        handle.write('{"key": "k2", "value": {"te')  # a kill -9 mid-write
    reloaded = ReplyCache(path)
    assert (len(reloaded), reloaded.skipped_lines, reloaded.get("k1")) == (1, 1, {"text": "one"})
    reloaded.put("k3", {"text": "three"})
    again = ReplyCache(path)
    assert again.get("k3") == {"text": "three"} and again.get("k2") is None and len(again) == 2


def test_sandbox_passes_and_fails_tests():
    result = run_tests("def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(2, 2) == 5"])
    assert (result.passed, result.total, result.status, result.fraction) == (1, 2, "ok", 0.5)


def test_sandbox_stops_an_infinite_loop():
    result = run_tests("def f():\n    return 1\nwhile True:\n    pass\n", ["assert f() == 1"], timeout=1.0)
    assert (result.passed, result.status) == (0, "timeout")


def test_sandbox_survives_crashes_and_bad_code():
    crash = run_tests("import os\nos.abort()\n", ["assert True"])
    assert crash.status == "crashed" and crash.passed == 0
    syntax = run_tests("def f(:\n", ["assert True"])
    assert syntax.status == "load_error" and "SyntaxError" in syntax.detail
    memory = run_tests("x = bytearray(4 * 1024 ** 3)\n", ["assert True"], memory_mb=256)
    assert memory.passed == 0 and "MemoryError" in memory.detail


def test_sandbox_caps_huge_output():
    result = run_tests(
        "def f():\n    return 1\nwhile True:\n    print('x' * 100000)\n",
        ["assert f() == 1"],
        timeout=5.0,
        output_bytes=1 << 16,
    )
    assert result.passed == 0 and result.status in (
        "load_error",
        "crashed",
    )  # stopped by the file-size limit, not the timeout


def test_sandbox_scores_code_replies():
    reply = "Here you go:\n```python\ndef square(x):\n    return x * x\n```\nDone."
    assert extract_code(reply) == "def square(x):\n    return x * x\n"
    scores, detail = VerifierScorer().score_group(
        {"tests": ["assert square(3) == 9", "assert square(2) == 4"]}, [reply, "def square(x): return x + x"]
    )
    assert scores == [1.0, 0.5] and detail["tests"] == ["2/2 ok", "1/2 ok"]


def test_reward_model_scorer_reads_the_score_head(tmp_path, tiny_tokenizer):
    import torch
    from conftest import build_reward_model

    from alignkit.data.tokenize import reward_text
    from alignkit.judges.scorers import RewardModelScorer

    model = build_reward_model(len(tiny_tokenizer))
    model.save_pretrained(tmp_path / "rm")
    tiny_tokenizer.save_pretrained(tmp_path / "rm")
    responses = ["2 + 3 = 5.", "Let me think about this at length."]
    scores, _ = RewardModelScorer(str(tmp_path / "rm")).score_group({"prompt": "What is 2 + 3?"}, responses)
    with torch.no_grad():
        expected = [
            model(
                **tiny_tokenizer(
                    reward_text(tiny_tokenizer, "What is 2 + 3?", r), return_tensors="pt", add_special_tokens=False
                )
            )
            .logits[0, 0]
            .item()
            for r in responses
        ]
    assert scores == pytest.approx(expected, abs=1e-5) and scores[0] != scores[1]
    scorer = RewardModelScorer(str(tmp_path / "rm"))
    assert not scorer.model.training and scorer.name == f"reward_model:{tmp_path / 'rm'}"  # scores without dropout
    one_at_a_time = scorer.score_batch([{"prompt": "What is 2 + 3?"}] * 2, responses, batch_size=1)
    assert one_at_a_time == pytest.approx(expected, abs=1e-5)
    # OpenRLHF's normalize_reward: the mean and std a reward model's config stores (none stored: as it is)
    assert RewardModelScorer(str(tmp_path / "rm"), normalize=True).score_batch(
        [{"prompt": "What is 2 + 3?"}], responses[:1]
    ) == pytest.approx(expected[:1], abs=1e-5)
    model.config.mean, model.config.std = 0.5, 2.0
    model.save_pretrained(tmp_path / "rm")
    normalised = RewardModelScorer(str(tmp_path / "rm"), normalize=True).score_group(
        {"prompt": "What is 2 + 3?"}, responses
    )[0]
    assert normalised == pytest.approx([(e - 0.5) / 2.0 for e in expected], abs=1e-5)
    assert RewardModelScorer(str(tmp_path / "rm")).score_group({"prompt": "What is 2 + 3?"}, responses)[
        0
    ] == pytest.approx(expected, abs=1e-5)
