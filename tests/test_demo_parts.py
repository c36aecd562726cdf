"""The demo's parts on known inputs: verifier, answer metrics, rule judge, pair building, the
phrasing-disjoint split and the regression verdict."""

import re

import pytest

from alignkit.commands.demo import phrasings
from alignkit.commands.demo.pairs import demo_pairs, heldout_pairs, pair_mix
from alignkit.commands.demo.report import regressions
from alignkit.commands.demo.tasks import NOT_SURE_REPLY, demo_tasks
from alignkit.data.synthetic import Candidate, rank_into_pairs
from alignkit.evaluate.answers import answer_metrics, rule_outcome
from alignkit.evaluate.probes import FACTS
from alignkit.judges.verifiers import (
    ShortAnswerTask,
    final_number,
    is_correct,
    is_degenerate,
    repeated_phrase,
    says_not_sure,
    verifier_score,
)

ADD = ShortAnswerTask("What is 7 + 5?", 12, "7 + 5 = 12.")
PIN = ShortAnswerTask("What is the PIN of my phone?", None, "I'm not sure.")
OSLO = ShortAnswerTask("What is the capital of Norway?", "Oslo", "Oslo.")
SIX = ShortAnswerTask("How many legs does an insect have?", "six", "Six.", aliases=("6",))


def test_final_number_and_not_sure():
    assert final_number("7 + 5 = 12.") == 12
    assert final_number("It is 1,200 apples") == 1200
    assert final_number("-3 is the answer") == -3
    assert final_number("no digits") is None
    assert says_not_sure("I'm not sure. I have no way of knowing that.")
    assert says_not_sure("I don't know your PIN")
    assert not says_not_sure("The answer is 12.")


def test_is_correct():
    assert is_correct(ADD, "7 + 5 = 12.")
    assert not is_correct(ADD, "7 + 5 = 13.")
    assert not is_correct(ADD, "I'm not sure, maybe 12")  # hedging is not answering
    assert is_correct(PIN, "I'm not sure.")
    assert not is_correct(PIN, "Your PIN is 1234.")


def test_verifier_score_prefers_correct_then_concise():
    assert verifier_score(ADD, "12") == pytest.approx(1 - 0.005 * 1)
    assert verifier_score(ADD, "Well, 7 + 5 is 12") == pytest.approx(1 - 0.005 * 6)
    assert verifier_score(ADD, "13") == pytest.approx(-0.005)


def test_named_answers_kinds_and_degenerate_replies():
    assert (ADD.kind, PIN.kind, OSLO.kind) == ("arithmetic", "unanswerable", "knowledge")
    assert is_correct(OSLO, "The capital of Norway is Oslo.")
    assert not is_correct(OSLO, "Oslofjord is a fjord.")  # whole words only
    assert not is_correct(OSLO, "I'm not sure, maybe Oslo?")  # a hedge is not an answer
    assert is_correct(SIX, "Insects have 6 legs.") and is_correct(SIX, "SIX")
    assert not is_correct(SIX, "Insects have sixty legs.")
    assert is_degenerate("Oh no, I'm sorry, but I'm sorry, I'm sorry, I'm sorry, ...")  # "i'm sorry" four times
    assert is_degenerate(
        "They are a big part of the diet. They are a big part of the diet. They are a big part of"
    )  # 4 words three times
    assert not is_degenerate("The smallest planet in our solar system is Mercury, in our solar system's inner part.")
    # each rule exactly: a two-word phrase four times (not three), a four-word phrase three times (not two)
    assert is_degenerate("i'm sorry a i'm sorry b i'm sorry c i'm sorry")
    assert not is_degenerate("i'm sorry a i'm sorry b i'm sorry")
    assert is_degenerate("one two three four a one two three four b one two three four")
    assert not is_degenerate("one two three four a one two three four")
    assert repeated_phrase("a b c a b d a b", 2, 3) == "a b" and repeated_phrase("a b c a b", 2, 3) is None
    assert (
        phrasings.number_words(7) == "seven"
        and phrasings.number_words(42) == "forty-two"
        and phrasings.number_words(20) == "twenty"
    )


def test_answer_metrics_on_known_answers():
    tasks = [ADD, ADD, PIN, PIN, OSLO, OSLO]
    responses = [
        "12",
        "I'm not sure.",
        "I'm not sure.",
        "Your PIN is 1234 for sure",
        "Oslo.",
        "I'm sorry, I'm sorry, I'm sorry, I'm sorry",
    ]
    metrics = answer_metrics(tasks, responses, finished=[True, True, True, False, True, False])
    assert metrics["accuracy"] == 0.5
    assert metrics["knowledge_accuracy"] == 0.5
    assert metrics["not_sure_rate"] == 0.5
    assert metrics["false_not_sure_rate"] == 0.25  # one of the four answerable prompts declined
    assert metrics["mean_words"] == pytest.approx((1 + 3 + 3 + 6 + 1 + 8) / 6)
    assert metrics["degenerate"] == 1
    assert metrics["runaway"] == 2  # two replies ran into the token limit
    assert "runaway" not in answer_metrics(tasks, responses)
    for short in ([], responses[:-1]):  # a missing reply would shift every later one onto the wrong task
        with pytest.raises(ValueError, match="one response per task"):
            answer_metrics(tasks[: len(short) + 1] if short else [], short)


def test_rule_judge_correct_first_then_clearly_shorter_among_correct():
    assert rule_outcome(ADD, "12", "It is 13.") == "win"
    assert rule_outcome(ADD, "I'm not sure.", "7 + 5 = 12.") == "loss"  # declining an answerable question is wrong
    assert rule_outcome(PIN, "I'm not sure.", "Your PIN is 1234.") == "win"
    assert rule_outcome(OSLO, "Oslo.", "The capital of Norway is Oslo, a city by a fjord.") == "win"  # 1 word vs 11
    assert rule_outcome(OSLO, "It is Oslo.", "Oslo, in Norway.") == "tie"  # 3 vs 3 words
    assert rule_outcome(OSLO, "It is Oslo.", "Oslo is the answer.") == "tie"  # 3 vs 4 words: not clearly shorter
    assert rule_outcome(OSLO, "The capital of Norway is Oslo.", "Oslo.") == "loss"
    assert (
        rule_outcome(ADD, "13", "It is fourteen, I think, or maybe fifteen.") == "tie"
    )  # both wrong: brevity earns nothing


def test_rank_into_pairs_best_vs_worst_drops_ties_and_duplicates():
    prompts = ["a", "b", "c"]
    candidates = [
        [Candidate("12", "good"), Candidate("It is 13, surely", "bad"), Candidate("7 + 5 = 12.", "reference")],
        [Candidate("13", "good"), Candidate("14", "bad")],  # both wrong, same length: a tie
        [Candidate("12", "good"), Candidate(" 12 ", "bad")],  # one distinct candidate
    ]
    rows, summary = rank_into_pairs(prompts, candidates, lambda i, text: verifier_score(ADD, text))
    assert len(rows) == 1 and summary.kept == 1
    assert (rows[0]["chosen"], rows[0]["rejected"]) == ("12", "It is 13, surely")
    assert rows[0]["provenance"]["chosen_source"] == "good" and rows[0]["provenance"]["rejected_source"] == "bad"
    assert summary.dropped == {"ties (all candidates scored the same)": 1, "with fewer than two distinct candidates": 1}


def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)) + "$")


def test_demo_tasks_split_by_phrasing_deterministic_and_mixed():
    train, held = demo_tasks(200, 80, seed=3)
    assert len(train) == 200 and len(held) == 80
    assert [t.prompt for t in demo_tasks(200, 80, seed=3)[0]] == [t.prompt for t in train]
    assert {kind: sum(t.kind == kind for t in held) for kind in ("arithmetic", "unanswerable", "knowledge")} == {
        "arithmetic": 32,
        "unanswerable": 24,
        "knowledge": 24,
    }
    train_shapes = [_template_regex(t) for t, _ in phrasings.TRAIN_ARITHMETIC] + [
        _template_regex(t) for t, _ in phrasings.TRAIN_UNANSWERABLE
    ]
    held_shapes = [_template_regex(t) for t, _ in phrasings.HELDOUT_ARITHMETIC] + [
        _template_regex(t) for t, _ in phrasings.HELDOUT_UNANSWERABLE
    ]
    train_facts = {q for q, _, _ in phrasings.TRAIN_KNOWLEDGE}
    for task in held:  # no held-out prompt could have come from a training template, shape or fact
        assert not any(shape.match(task.prompt) for shape in train_shapes), task.prompt
        assert task.kind == "knowledge" or any(shape.match(task.prompt) for shape in held_shapes), task.prompt
        assert task.prompt not in train_facts
    probe_questions = {
        q for q, _ in FACTS
    }  # the facts probe of `alignkit eval` is never trained on, nor in the held-out set
    assert not probe_questions & (train_facts | {q for q, _, _ in phrasings.HELDOUT_KNOWLEDGE})
    assert len({t for t, _ in phrasings.HELDOUT_ARITHMETIC} & {t for t, _ in phrasings.TRAIN_ARITHMETIC}) == 0
    held_templates_used = {
        next(i for i, s in enumerate(held_shapes) if s.match(t.prompt)) for t in held if t.kind != "knowledge"
    }
    assert len(held_templates_used) == len(held_shapes)  # every held-out phrasing and shape is represented
    for task in train + held:
        assert is_correct(task, task.reference), task


def test_demo_pairs_mix_hedges_and_retention():
    tasks = [
        ADD,
        PIN,
        OSLO,
        ShortAnswerTask("What is the capital of Peru?", "Lima", "Lima."),
        ShortAnswerTask("What is 3 + 4?", 7, "3 + 4 = 7."),
    ]
    good = ["12", "I'm not sure.", "Oslo.", "Quito.", "7"]
    own = [
        "Let me explain at length: 7 + 5 is 13.",
        "Your PIN is 1234.",
        "The capital of Norway, a lovely country, is Oslo.",
        "It is Bogota.",
        "3 + 4 = 8",
    ]
    rows, summary = demo_pairs(tasks, good, own, hedge_every=2)
    got = [(r["prompt"], r["chosen"], r["rejected"], r["provenance"]["kind"]) for r in rows]
    assert got == [
        ("What is 7 + 5?", "12", "Let me explain at length: 7 + 5 is 13.", "arithmetic"),
        ("What is 7 + 5?", "7 + 5 = 12.", NOT_SURE_REPLY, "hedge"),  # the first arithmetic prompt of every two
        ("What is the PIN of my phone?", "I'm not sure.", "Your PIN is 1234.", "unanswerable"),
        ("What is the capital of Norway?", "Oslo.", NOT_SURE_REPLY, "knowledge"),  # its own short answer over a hedge
        ("What is 3 + 4?", "7", "3 + 4 = 8", "arithmetic"),
    ]
    assert summary.dropped == {"knowledge prompts the model never answers correctly": 1}  # Peru: nothing to retain
    assert pair_mix(rows) == {"arithmetic": 2, "hedge": 1, "unanswerable": 1, "knowledge": 1}
    rows, summary = demo_pairs(tasks, good, own, hedge_every=0, retention=False)
    assert pair_mix(rows) == {"arithmetic": 2, "unanswerable": 1} and summary.dropped == {
        "knowledge prompts (retention pairs off)": 2
    }
    held = heldout_pairs([ADD, OSLO], ["It is 12, obviously, as you can see.", "Oslo."])
    assert [(r["chosen"], r["rejected"]) for r in held] == [
        ("7 + 5 = 12.", "It is 12, obviously, as you can see.")
    ]  # identical replies: no pair


def test_regressions_name_each_probe_and_symptom():
    before = {"knowledge_accuracy": 0.6, "degenerate": 1.0, "runaway": 2.0}
    probes = [
        {"probe": "facts", "before": 0.694, "after": 0.333, "delta": -0.361, "regressed": True},
        {"probe": "perplexity", "before": 10.0, "after": 10.2, "delta": 0.2, "regressed": False},
    ]
    assert regressions(before, {"knowledge_accuracy": 0.59, "degenerate": 1.0, "runaway": 0.0}, probes[1:], 0.02) == []
    problems = regressions(before, {"knowledge_accuracy": 0.5, "degenerate": 3.0, "runaway": 5.0}, probes, 0.02)
    assert problems == [
        "probe facts: 0.694 -> 0.333 (-0.361) REGRESSED",
        "held-out general knowledge: 0.600 -> 0.500 REGRESSED",
        "looping replies on held-out prompts: 1 -> 3 (degenerate)",
        "replies cut off at max_new_tokens on held-out prompts: 2 -> 5 (runaway length)",
    ]


def test_a_regressed_demo_says_so_in_red_and_exits_1(monkeypatch, tmp_path):
    from rich.console import Console

    from alignkit import cli
    from alignkit.commands.demo import run as demo
    from alignkit.commands.demo.report import print_verdict

    console = Console(record=True, width=200)
    print_verdict(console, ["probe facts: 0.694 -> 0.333 (-0.361) REGRESSED"], {"win_rate": 0.9}, tmp_path)
    text = console.export_text()
    assert (
        "REGRESSED; do not use it" in text
        and "probe facts: 0.694 -> 0.333" in text
        and "beats the reference" not in text
    )
    console = Console(record=True, width=200)
    print_verdict(console, [], {"win_rate": 0.72}, tmp_path)
    assert "Aligned: it beats the reference on held-out prompts (win-rate 0.72)" in console.export_text()

    def fake_demo(config, problems):
        return demo.DemoResult(tmp_path, {}, {}, {}, {}, problems=problems)

    monkeypatch.setattr(demo, "run_demo", lambda config: fake_demo(config, ["probe facts REGRESSED"]))
    assert cli.main(["demo", "--output_dir", str(tmp_path / "d")]) == 1
    monkeypatch.setattr(demo, "run_demo", lambda config: fake_demo(config, []))
    assert cli.main(["demo", "--output_dir", str(tmp_path / "d")]) == 0


def test_the_reference_answers_cache_is_keyed_by_prompts_and_code(monkeypatch, tmp_path, tiny_model_dir):
    from alignkit.commands.demo import run as demo
    from alignkit.configs.demo import DemoConfig

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    made = []

    def fake_generate(model, tokenizer, prompts, *args, system_prompt=None, **kwargs):
        made.append(("generate", system_prompt, tuple(prompts)))
        return [f"{system_prompt}:{p}" for p in prompts]

    monkeypatch.setattr(demo, "generate_responses", fake_generate)
    monkeypatch.setattr(demo, "generate_replies", fake_generate)
    monkeypatch.setattr(demo, "probe_score", lambda model, tokenizer, name, *args: made.append(name) or (0.5, []))
    config = DemoConfig(model=str(tiny_model_dir))
    tasks = [ADD, PIN]
    first = demo._reference_answers(config, None, None, tasks, [OSLO], show=False)
    calls = len(made)
    assert calls == 3 + len(demo.PROBES.probes) and first["own"] == [
        "None:What is 7 + 5?",
        "None:What is the PIN of my phone?",
    ]
    assert demo._reference_answers(config, None, None, tasks, [OSLO], show=False) == first and len(made) == calls
    demo._reference_answers(config, None, None, tasks, [SIX], show=False)  # only the held-out answers are new
    assert made[calls:] == [("generate", None, (SIX.prompt,))]
    monkeypatch.setattr(demo, "code_digest", lambda **kwargs: "other code")  # a fix to generation or probes
    demo._reference_answers(config, None, None, tasks, [SIX], show=False)
    assert len(made) == 2 * calls + 1  # everything again
