"""`alignkit eval`: win-rate and its interval, judged outcomes (scorer and position-swapped LLM judge
over HTTP), implicit reward accuracy, probes, and a whole evaluation of a tiny LoRA run."""

import json
import math

import pytest
import torch
from conftest import build_model, build_reward_model, write_pairs

from alignkit.evaluate.probes import ProbeResult, fact_correct, perplexity
from alignkit.evaluate.reward_accuracy import band_flag, implicit_reward_accuracy
from alignkit.evaluate.winrate import judge_outcomes, outcome_from_scores, win_rate
from alignkit.judges.scorers import VerifierScorer


def test_win_rate_counts_ties_as_half():
    result = win_rate(["win", "win", "tie", "loss"], n_bootstrap=200)
    assert result.win_rate == pytest.approx((2 + 0.5) / 4)
    assert (result.wins, result.ties, result.losses, result.n) == (2, 1, 1, 4)
    assert result.ci_low <= result.win_rate <= result.ci_high
    assert win_rate(["win"] * 10).as_dict() == {
        "win_rate": 1.0,
        "ci_low": 1.0,
        "ci_high": 1.0,
        "wins": 10,
        "ties": 0,
        "losses": 0,
        "n": 10,
    }


def test_bootstrap_interval_matches_the_normal_approximation():
    outcomes = ["win", "loss"] * 200  # p = 0.5, n = 400: 1.96 * sqrt(0.25 / 400) = 0.049
    result = win_rate(outcomes, n_bootstrap=2000, seed=3)
    assert result.ci_low == pytest.approx(0.5 - 0.049, abs=0.01) and result.ci_high == pytest.approx(
        0.5 + 0.049, abs=0.01
    )
    assert win_rate(outcomes, n_bootstrap=2000, seed=3) == result  # seeded: reproducible
    with pytest.raises(ValueError):
        win_rate([])


def test_outcome_from_scores():
    assert (
        outcome_from_scores(1.0, 0.0) == "win"
        and outcome_from_scores(0.0, 1.0) == "loss"
        and outcome_from_scores(0.5, 0.5) == "tie"
    )


def test_scorer_outcomes_and_identical_answers():
    rows = [
        {"prompt": "What is 2 + 3?", "answer": 5},
        {"prompt": "What is 4 + 4?", "answer": 8},
        {"prompt": "What is 1 + 1?", "answer": 2},
    ]
    records = judge_outcomes(
        rows,
        ["2 + 3 = 5.", "It is 9.", "2"],
        ["Maybe 6.", "4 + 4 = 8.", "2"],
        scorer=VerifierScorer(),
        show_progress=False,
    )
    assert [r["outcome"] for r in records] == ["win", "loss", "tie"]
    assert records[0]["scores"] == [1.0, 0.0] and records[2]["why"] == "identical answers"


def test_llm_judge_outcomes_are_position_swapped_over_http():
    from fault_server import FaultServer
    from test_endpoints import client_for

    from alignkit.commands.serve import run_in_background
    from alignkit.judges.llm_judge import LLMJudge

    server = FaultServer()
    rows = [{"prompt": f"Q{i}?"} for i in range(4)]
    mine = ["GOOD a", "poor b", "GOOD c", "same"]
    theirs = ["poor a", "GOOD b", "GOOD c too", "same"]
    with run_in_background(server.app) as url:
        judge = LLMJudge(client_for(url, "judge"))
        records = judge_outcomes(rows, mine, theirs, judge=judge, show_progress=False)
    assert [r["outcome"] for r in records] == ["win", "loss", "tie", "tie"]
    assert records[0]["verdicts"] == ["A", "B"] and records[0]["consistent"]  # asked in both orders, agreed
    assert server.total == 2 * 3  # identical answers were never sent


def test_implicit_reward_accuracy_by_hand():
    policy = torch.tensor([[-1.0, -3.0], [-2.0, -1.0]])
    reference = torch.tensor([[-2.0, -2.0], [-2.0, -2.0]])
    result = implicit_reward_accuracy(policy, reference, beta=0.5)
    # rewards: chosen [0.5, 0.0], rejected [-0.5, 0.5]
    assert result["accuracy"] == 0.5 and result["margin"] == pytest.approx((1.0 - 0.5) / 2)
    assert result["rewards/chosen"] == pytest.approx(0.25) and result["rewards/rejected"] == pytest.approx(0.0)
    assert "below" in result["flag"] and "within" in band_flag(0.8) and "above" in band_flag(0.95)
    assert "within" in band_flag(0.7) and "within" in band_flag(0.9)  # the band's edges are healthy
    tied = implicit_reward_accuracy(torch.tensor([[-1.0, -1.0]]), torch.tensor([[-2.0, -2.0]]), beta=0.5)
    assert tied["accuracy"] == 0.0 and tied["margin"] == 0.0  # a tie is not a correct ranking


def test_perplexity_matches_a_naive_loop(tiny_tokenizer):
    model = build_model(len(tiny_tokenizer)).eval()
    texts = ["What is 2 + 3? The answer is five.", "I'm not sure.", "Hi", "a"]  # 2 tokens, 1 (nothing to predict)
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tiny_tokenizer(text)["input_ids"]
            logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            nll -= sum(logprobs[i - 1, ids[i]].item() for i in range(1, len(ids)))
            count += len(ids) - 1
    assert perplexity(model, tiny_tokenizer, texts) == pytest.approx(math.exp(nll / count), rel=1e-5)
    # a text past max_length is scored on its first max_length tokens
    ids = tiny_tokenizer(texts[0])["input_ids"][:8]
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    first_eight = -sum(logprobs[i - 1, ids[i]].item() for i in range(1, 8)) / 7
    assert perplexity(model, tiny_tokenizer, texts[:1], max_length=8) == pytest.approx(math.exp(first_eight), rel=1e-5)


def test_probe_checks_and_regressions():
    assert fact_correct("The capital of France is Paris.", "Paris") and not fact_correct("It is Lyon.", "Paris")
    assert fact_correct("A week has 7 days.", "seven") and fact_correct("Spiders have eight legs.", "eight")
    assert ProbeResult("facts", "accuracy", 0.5, 0.47, 36, True).regressed(0.02, 0.05)
    assert not ProbeResult("facts", "accuracy", 0.5, 0.49, 36, True).regressed(0.02, 0.05)
    assert ProbeResult("perplexity", "perplexity", 10.0, 10.6, 10, False).regressed(0.02, 0.05)
    assert not ProbeResult("perplexity", "perplexity", 10.0, 10.4, 10, False).regressed(0.02, 0.05)


def test_probe_questions_texts_and_lm_eval_scores(tmp_path, monkeypatch):
    """The arithmetic probe is the same every time and its answers are right; general text is read by
    paragraph; lm-evaluation-harness results give each task's first accuracy-like metric."""
    import re
    import sys
    import types

    from alignkit.evaluate.probes import arithmetic_probe, general_texts, run_lm_eval

    rows = arithmetic_probe(60)
    assert rows == arithmetic_probe(60) and len(rows) == 60
    for row in rows:
        a, op, b = re.fullmatch(r"What is (\d+) ([+\-×]) (\d+)\?", row["prompt"]).groups()
        assert row["answer"] == {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]
    assert {row["prompt"].split()[3] for row in rows} == {"+", "-", "×"}
    (tmp_path / "text.txt").write_text("First paragraph,\nstill the first.\n\n\n  Second one.  \n\n")
    assert general_texts(str(tmp_path / "text.txt")) == ["First paragraph,\nstill the first.", "Second one."]
    assert len(general_texts()) >= 5  # the shipped passage

    calls = []

    def simple_evaluate(**kwargs):
        calls.append(kwargs)
        metrics = {"mmlu": {"alias": "mmlu", "acc,none": 0.41, "acc_stderr,none": 0.01}}
        return {"results": {**metrics, "humaneval": {"pass@1,create_test": 0.12}, "other": {"bleu": 3.0}}}

    monkeypatch.setitem(sys.modules, "lm_eval", types.SimpleNamespace(simple_evaluate=simple_evaluate))
    assert run_lm_eval("runs/x/final", ["mmlu", "humaneval", "other"], 5) == {"mmlu": 0.41, "humaneval": 0.12}
    assert calls == [
        dict(model="hf", model_args="pretrained=runs/x/final", tasks=["mmlu", "humaneval", "other"], limit=5)
    ]


def test_probe_scores_check_each_kind_of_answer_its_own_way(monkeypatch):
    """Arithmetic replies are read for their final number, facts replies for the answer anywhere (or a number's
    word); the score is the fraction right, with the number of items, under the probe's own metric."""
    from alignkit.evaluate import probes

    asked = []

    def replies(model, tokenizer, prompts, max_new_tokens, batch_size, desc, show_progress):
        asked.append((desc, max_new_tokens, show_progress))
        rows = probes.arithmetic_probe(4) if desc == "probe: arithmetic" else probes.facts_probe(4)
        second = (  # arithmetic: the right number, then another (its final number is wrong)
            f"{rows[1]['answer']}, or {int(rows[1]['answer']) + 1}"
            if desc == "probe: arithmetic"
            else f"{rows[1]['answer']} is the answer"
        )
        return [f"It is {rows[0]['answer']}.", second, "I do not know.", f"So: {rows[3]['answer']}"]

    monkeypatch.setattr(probes, "generate_responses", replies)
    assert probes.probe_score(None, None, "arithmetic", 4, 2) == (0.5, 4)  # rows 0 and 3: final numbers right
    assert probes.probe_score(None, None, "facts", 4, 2) == (0.75, 4)  # rows 0, 1 and 3 name the capital
    assert asked == [("probe: arithmetic", 48, False), ("probe: facts", 48, False)]
    facts, perplexity_probe = probes.probe_result("facts", 0.75, 0.5, 4), probes.probe_result("perplexity", 9, 10, 3)
    assert (facts.metric, facts.higher_is_better, facts.delta) == ("accuracy", True, -0.25)
    assert (perplexity_probe.metric, perplexity_probe.higher_is_better) == ("perplexity", False)


def test_a_second_eval_replaces_the_first_in_the_model_card(tmp_path):
    from alignkit.train.run_outputs import add_eval_to_model_card

    assert add_eval_to_model_card(tmp_path, {"win_rate": None}) is False  # no card: nothing written
    assert not (tmp_path / "README.md").exists()
    card = tmp_path / "README.md"
    card.write_text("---\ntags:\n- alignkit\n---\n# run\n\n## Hyper-parameters\n- beta: 0.1\n")
    win = {"win_rate": 0.6, "ci_low": 0.4, "ci_high": 0.8, "wins": 6, "ties": 0, "losses": 4, "judge": "verifier"}
    first = {
        "reference": "base",
        "win_rate": win,
        "reward_accuracy": {"accuracy": 0.75, "pairs": 8},
        "probes": [{"probe": "facts", "before": 0.5, "after": 0.4, "regressed": True}],
    }
    assert add_eval_to_model_card(tmp_path, first) is True
    text = card.read_text()
    assert "- held-out reward accuracy: 0.750 on 8 pairs" in text
    assert "- probe facts: 0.500 -> 0.400 (regressed)" in text
    assert text.rstrip().endswith("<!-- /alignkit eval -->")
    second = {"reference": "base", "win_rate": dict(win, win_rate=0.7, wins=7, losses=3), "probes": []}
    assert add_eval_to_model_card(tmp_path, second) is True
    text = card.read_text()
    assert text.count("## Evaluation (alignkit eval)") == 1 and text.count("<!-- alignkit eval -->") == 1
    assert "0.700 (95% CI 0.400-0.800; 7 wins, 0 ties, 3 losses; verifier)" in text and "0.600" not in text
    assert "reward accuracy" not in text and "- beta: 0.1" in text


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    from alignkit.configs import DPOConfig, load_config
    from alignkit.train.dpo import train_dpo

    root = tmp_path_factory.mktemp("eval-run")
    train, held = write_pairs(root / "train.jsonl", 12), write_pairs(root / "held.jsonl", 30)
    held.write_text("".join(held.read_text().splitlines(keepends=True)[12:]))  # 18 pairs never trained on
    args = [
        "--model",
        str(tiny_model_dir),
        "--train_data",
        str(train),
        "--eval_data",
        str(held),
        "--output_dir",
        str(root / "run"),
        "--use_peft",
        "--lora_r",
        "4",
        "--learning_rate",
        "5e-3",
        "--preflight",
        "false",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--max_length",
        "64",
        "--max_prompt_length",
        "32",
        "--disable_tqdm",
        "--report_to",
        "none",
        "--beta",
        "0.2",
        "--preflight",
        "false",
    ]
    train_dpo(load_config(DPOConfig, None, args))
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"What is {a} + {a}?", "answer": 2 * a}) + "\n" for a in range(1, 6))
    )
    return root


def test_evaluates_a_lora_run_against_its_starting_model(lora_run, tiny_model_dir):
    from test_engine import naive_logps

    from alignkit.configs import EvalConfig, load_config
    from alignkit.evaluate.run import evaluate_model
    from alignkit.models.loading import load_model_and_tokenizer

    config = load_config(
        EvalConfig,
        None,
        [
            "--model",
            str(lora_run / "run"),
            "--prompts",
            str(lora_run / "prompts.jsonl"),
            "--max_new_tokens",
            "8",
            "--probes",
            "perplexity,facts",
            "--probe_size",
            "3",
            "--disable_tqdm",
            "--inspect",
            "3",
        ],
    )
    result = evaluate_model(config)
    out = lora_run / "run" / "eval"
    assert result.output_dir == out
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["reference"] == str(tiny_model_dir) and saved["shares_weights"] is True
    assert saved["win_rate"]["n"] == 5 and saved["win_rate"]["judge"] == "verifier"
    assert len((out / "winrate.jsonl").read_text().splitlines()) == 5
    assert (out / "inspection.md").read_text().count("\n| ") == 1 + 3  # header + 3 rows
    assert "<table>" in (out / "inspection.html").read_text()
    assert [p["probe"] for p in saved["probes"]] == ["perplexity", "facts"]
    card = (lora_run / "run" / "final" / "README.md").read_text()  # the run's model card now holds the eval
    section = card[card.index("## Evaluation (alignkit eval)") :]
    assert f"{saved['win_rate']['win_rate']:.3f} (95% CI" in section and section.count("- probe ") == 2
    assert card.index("## Hyper-parameters") < card.index("## Evaluation (alignkit eval)")

    # reward accuracy on the run's 18 held-out pairs, recomputed independently with full logits
    from alignkit.data.preference import load_preference_data
    from alignkit.data.tokenize import tokenize_pairs

    merged, tokenizer = load_model_and_tokenizer(str(lora_run / "run"))
    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    pairs = tokenize_pairs(load_preference_data(str(lora_run / "held.jsonl")), tokenizer, 64, 32)
    seqs = [p.prompt_ids + r for p in pairs for r in (p.chosen_ids, p.rejected_ids)]
    starts = [len(p.prompt_ids) for p in pairs for _ in range(2)]
    with torch.no_grad():
        margins = 0.2 * ((naive_logps(merged, seqs, starts) - naive_logps(base, seqs, starts)).reshape(-1, 2))
    expected = (margins[:, 0] > margins[:, 1]).float().mean().item()
    assert saved["reward_accuracy"]["pairs"] == 18
    assert saved["reward_accuracy"]["accuracy"] == pytest.approx(expected)
    assert saved["reward_accuracy"]["margin"] == pytest.approx((margins[:, 0] - margins[:, 1]).mean().item(), abs=1e-4)

    from alignkit.errors import RunDirError

    with pytest.raises(RunDirError, match="already exists"):
        evaluate_model(config)


def test_eval_cli_without_a_judge_skips_win_rate(lora_run, capsys):
    from alignkit.cli import main

    out = lora_run / "plain-eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(lora_run / "run" / "final"),
                "--output_dir",
                str(out),
                "--probes",
                "facts",
                "--probe_size",
                "2",
                "--disable_tqdm",
                "--max_new_tokens",
                "4",
            ]
        )
        == 0
    )
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["win_rate"] is None and saved["reward_accuracy"]["pairs"] == 18  # pairs found through the run's config
    assert "win-rate skipped" in capsys.readouterr().err


def test_reward_accuracy_from_a_reward_model(lora_run, tiny_tokenizer, tmp_path):
    from alignkit.configs import EvalConfig
    from alignkit.data.preference import load_preference_data
    from alignkit.data.tokenize import reward_text
    from alignkit.evaluate.run import evaluate_model

    rm = build_reward_model(len(tiny_tokenizer), seed=1)
    rm.save_pretrained(tmp_path / "rm")
    tiny_tokenizer.save_pretrained(tmp_path / "rm")
    result = evaluate_model(
        EvalConfig(
            model=str(lora_run / "run"),
            reward_model=str(tmp_path / "rm"),
            output_dir=str(tmp_path / "ev"),
            probes=[],
            disable_tqdm=True,
            max_new_tokens=8,  # the answers are judged too; what this test checks is the reward accuracy of pairs
        )
    )
    pairs = load_preference_data(str(lora_run / "held.jsonl"))

    def score(prompt, response):
        ids = tiny_tokenizer(
            reward_text(tiny_tokenizer, prompt, response), return_tensors="pt", add_special_tokens=False
        )
        with torch.no_grad():
            return rm(**ids).logits[0, 0].item()

    correct = [score(p.prompt, p.chosen) > score(p.prompt, p.rejected) for p in pairs]
    found = result.results["reward_accuracy"]
    assert found["kind"].startswith("reward_model:") and found["pairs"] == 18
    assert found["accuracy"] == pytest.approx(sum(correct) / len(correct))
    # win-rate: no prompts with answers and no LLM judge, so the reward model judges the answers
    assert result.results["win_rate"]["judge"].startswith("reward_model:")


def test_overwrite_replaces_an_eval_folder_and_nothing_else(tmp_path):
    from alignkit.errors import RunDirError
    from alignkit.evaluate.run import prepare_eval_dir

    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "draft.md").write_text("mine")
    with pytest.raises(RunDirError, match=r"holds no evaluation \(draft.md\)"):
        prepare_eval_dir(folder, overwrite=True)
    assert (folder / "draft.md").read_text() == "mine"
    (folder / "eval_results.json").write_text("{}")
    assert prepare_eval_dir(folder, overwrite=True) == folder and list(folder.iterdir()) == []
