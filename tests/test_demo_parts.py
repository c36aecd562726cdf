"""The demo's parts on known inputs: verifier, answer metrics, pair ranking, disjoint prompts."""
import pytest

from alignkit.data.demo_tasks import demo_tasks
from alignkit.data.synthetic import Candidate, rank_into_pairs
from alignkit.evaluate.answers import answer_metrics
from alignkit.judges.verifiers import ShortAnswerTask, final_number, is_correct, says_not_sure, verifier_score

ADD = ShortAnswerTask("What is 7 + 5?", 12, "7 + 5 = 12.")
PIN = ShortAnswerTask("What is the PIN of my phone?", None, "I'm not sure.")


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


def test_answer_metrics_on_known_answers():
    tasks = [ADD, ADD, PIN, PIN]
    responses = ["12", "I'm not sure.", "I'm not sure.", "Your PIN is 1234 for sure"]
    metrics = answer_metrics(tasks, responses)
    assert metrics["accuracy"] == 0.5
    assert metrics["not_sure_rate"] == 0.5
    assert metrics["false_not_sure_rate"] == 0.5
    assert metrics["mean_words"] == pytest.approx((1 + 3 + 3 + 6) / 4)


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


def test_demo_tasks_are_disjoint_deterministic_and_mixed():
    train, held = demo_tasks(100, 40, seed=3)
    assert len(train) == 100 and len(held) == 40
    assert not {t.prompt for t in train} & {t.prompt for t in held}
    assert sum(not t.answerable for t in held) == 12  # 30% unanswerable
    assert [t.prompt for t in demo_tasks(100, 40, seed=3)[0]] == [t.prompt for t in train]
    for task in train:
        if task.answerable:
            assert is_correct(task, task.reference)
        else:
            assert says_not_sure(task.reference)
