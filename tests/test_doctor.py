"""`alignkit doctor`: every check triggered on purpose (and passing when it should), the CLI's exit
status, and the same checks stopping a training run before anything is written."""

import json

import numpy as np
import pytest
from conftest import build_reward_model, build_tokenizer

from alignkit.cli import main
from alignkit.configs import DPOConfig, KTOConfig, ORPOConfig, SFTConfig
from alignkit.data.preference import PreferenceExample
from alignkit.data.tokenize import ensure_pad_token
from alignkit.diagnose import checks, context
from alignkit.diagnose.doctor import PreflightError, run_checks


def pair(i, chosen=None, rejected=None, prompt=None):
    return PreferenceExample(
        prompt or f"What is {i} + {i}?",
        chosen or f"{i} + {i} = {2 * i}.",
        rejected or f"Let me think at length about it, maybe {2 * i + 1}.",
        f"d.jsonl:{i}",
    )


def pairs(n, start=0):
    return [pair(i) for i in range(start, start + n)]


def cfg(tmp_path, **values):
    base = {
        "train_data": "d.jsonl",
        "output_dir": str(tmp_path / "out"),
        "learning_rate": 5e-6,
        "max_length": 128,
        "max_prompt_length": 64,
        "per_device_train_batch_size": 2,
    }
    return DPOConfig(**{**base, **values})


@pytest.fixture
def tok():
    tokenizer = build_tokenizer(with_pad=True)
    return tokenizer


def by_name(report):
    return {c.name: c for c in report.checks}


def test_a_clean_setup_passes_every_data_and_setup_check(tmp_path, tok):
    report = by_name(run_checks(cfg(tmp_path), pairs(1000), pairs(25, start=2000), tok))
    for name in (
        "data",
        "data size",
        "duplicates",
        "train/eval leakage",
        "chosen vs rejected",
        "eval split",
        "chat template",
        "pad token",
        "learning rate",
        "beta",
        "max_length",
        "max_prompt_length",
        "reference model",
        "output_dir",
    ):
        assert report[name].status == "pass", (name, report[name].detail)
    assert "starting model" not in report  # no model given: the probe is skipped


def test_small_data_warns(tmp_path, tok):
    found = by_name(run_checks(cfg(tmp_path), pairs(12), pairs(25, start=100), tok))["data size"]
    assert found.status == "warn" and "12 training pairs" in found.detail


def test_duplicates_warn_with_where(tmp_path, tok):
    data = pairs(5) + [pair(2), pair(3)]
    found = by_name(run_checks(cfg(tmp_path), data, [], tok))["duplicates"]
    assert found.status == "warn" and found.detail.startswith("2 training rows repeat") and "d.jsonl:2" in found.detail


def test_leakage_fails_on_shared_pairs_and_warns_on_shared_prompts(tmp_path, tok):
    report = run_checks(cfg(tmp_path), pairs(30), [pair(4), pair(100)], tok)
    assert by_name(report)["train/eval leakage"].status == "fail" and report.failed
    assert "1 of 2 eval rows" in by_name(report)["train/eval leakage"].detail
    shared_prompt = pair(5, chosen="10, of course.")
    found = by_name(run_checks(cfg(tmp_path), pairs(30), [shared_prompt, pair(100)], tok))["train/eval leakage"]
    assert found.status == "warn" and "1 of 2 eval prompts" in found.detail


def test_near_identical_pairs_warn(tmp_path, tok):
    data = pairs(10) + [pair(50, chosen="The answer is 100.", rejected="The answer is 100!")]
    found = by_name(run_checks(cfg(tmp_path), data, [], tok))["chosen vs rejected"]
    assert found.status == "warn" and found.detail.startswith("1 pairs") and "d.jsonl:50" in found.detail
    # identical answers in more than a quarter of the pairs: a mix-up of columns, which fails
    same = [pair(i, chosen="Same.", rejected="Same.") for i in range(3)]
    found = by_name(run_checks(cfg(tmp_path), pairs(8) + same, [], tok))["chosen vs rejected"]
    assert found.status == "fail" and found.detail.startswith("3 of 11 pairs have chosen identical to rejected")
    found = by_name(run_checks(cfg(tmp_path), pairs(9) + same, [], tok))["chosen vs rejected"]  # exactly a quarter
    assert found.status == "warn" and found.detail.startswith("3 pairs have near-identical")


def test_chat_template_missing_or_already_applied(tmp_path, tok):
    templated = [pair(i, prompt=f"<|im_start|>user\nWhat is {i}?<|im_end|>") for i in range(3)]
    found = by_name(run_checks(cfg(tmp_path), templated + pairs(5, start=10), [], tok))["chat template"]
    assert found.status == "warn" and "3 prompts already contain" in found.detail
    bare = build_tokenizer(with_pad=True)
    bare.chat_template = None
    found = by_name(run_checks(cfg(tmp_path), pairs(5), [], bare))["chat template"]
    assert found.status == "warn" and "no chat template" in found.detail
    assert (
        by_name(run_checks(cfg(tmp_path, apply_chat_template=False), pairs(5), [], tok))["chat template"].status
        == "warn"
    )


def test_missing_pad_token_warns(tmp_path):
    tokenizer = build_tokenizer(with_pad=False)
    ensure_pad_token(tokenizer)
    found = by_name(run_checks(cfg(tmp_path), pairs(5), [], tokenizer))["pad token"]
    assert found.status == "warn" and "'<|im_end|>'" in found.detail


def test_learning_rate_and_beta_ranges(tmp_path, tok):
    def status(name, **values):
        return by_name(run_checks(cfg(tmp_path, **values), pairs(5), [], tok))[name].status

    assert status("learning rate", learning_rate=5e-4) == "warn"  # 5x the usual top for full fine-tuning: may be fine
    assert status("learning rate", learning_rate=1e-3) == "fail"  # 10x: an order of magnitude out, the run is wasted
    assert (
        status("learning rate", learning_rate=5e-7) == "warn" and status("learning rate", learning_rate=1e-7) == "fail"
    )
    assert status("learning rate", learning_rate=2e-4) == "warn"  # too high for full fine-tuning ...
    assert status("learning rate", learning_rate=2e-4, use_peft=True) == "pass"  # ... usual for LoRA
    found = by_name(run_checks(cfg(tmp_path, learning_rate=1e-3, use_peft=True), pairs(5), [], tok))["learning rate"]
    assert found.status == "warn" and found.detail.endswith("the usual range for LoRA.")
    assert "With fewer than" in found.fix  # 5 rows: stay in the lower half
    found = by_name(run_checks(cfg(tmp_path, learning_rate=1e-3), pairs(5), [], tok))["learning rate"]
    assert found.detail.endswith("the usual range for full fine-tuning.")
    assert (
        status("beta", beta=5.0) == "warn"
        and status("beta", beta=0.01) == "warn"
        and status("beta", beta=0.5) == "pass"
    )
    assert status("beta", beta=10.0) == "fail" and status("beta", beta=0.005) == "fail"
    assert (
        status("beta", beta=2.0, loss_type="simpo") == "pass" and status("beta", beta=0.2, loss_type="simpo") == "warn"
    )
    assert status("beta", beta=0.1, loss_type="simpo") == "fail"  # SimPO's beta is 2-2.5: 0.1 is a DPO habit


def test_max_length_measures_truncation(tmp_path, tok):
    long_reply = "Let me think about this at length, step by step, before answering the question. " * 6
    data = pairs(18) + [pair(100 + i, rejected=long_reply) for i in range(2)]
    found = by_name(run_checks(cfg(tmp_path), data, [], tok))["max_length"]
    assert found.status == "warn" and "truncates 10.0% of training rows" in found.detail  # 2 of 20
    assert (
        by_name(run_checks(cfg(tmp_path, max_length=1024, max_prompt_length=512), data, [], tok))["max_length"].status
        == "pass"
    )


def test_max_prompt_length_near_half(tmp_path, tok):
    found = by_name(run_checks(cfg(tmp_path, max_length=128, max_prompt_length=120), pairs(5), [], tok))[
        "max_prompt_length"
    ]
    assert found.status == "warn" and "is 94% of max_length" in found.detail
    assert (
        by_name(run_checks(cfg(tmp_path, max_length=128, max_prompt_length=8), pairs(5), [], tok))[
            "max_prompt_length"
        ].status
        == "warn"
    )  # prompts cut
    long_prompt = "Please read the whole of this question carefully before you answer it: " * 3
    data = pairs(15) + [pair(100 + i, prompt=long_prompt + str(i)) for i in range(5)]
    found = by_name(run_checks(cfg(tmp_path, max_length=512, max_prompt_length=256), data, [], tok))
    assert found["max_prompt_length"].status == "pass" and "is 50% of max_length; 0.0% of prompts" in (
        found["max_prompt_length"].detail
    )
    found = by_name(run_checks(cfg(tmp_path, max_length=128, max_prompt_length=64), data, [], tok))
    assert found["max_prompt_length"].status == "warn" and "is 50% of max_length; 25.0% of prompts are cut" in (
        found["max_prompt_length"].detail
    )  # half is right, yet a quarter of the prompts lose their start
    assert found["max_length"].status == "warn" and "truncates 25.0% of training rows" in found["max_length"].detail
    mostly_long = pairs(8) + [pair(100 + i, prompt=long_prompt + str(i)) for i in range(12)]
    found = by_name(run_checks(cfg(tmp_path, max_length=128, max_prompt_length=64), mostly_long, [], tok))
    assert found["max_length"].status == "fail" and "truncates 60.0% of training rows" in found["max_length"].detail
    found = by_name(run_checks(cfg(tmp_path, max_length=16, max_prompt_length=None), data, [], tok))
    assert found["max_length"].status == "fail" and "truncates 100.0% of training rows" in found["max_length"].detail
    assert found["max_prompt_length"].status == "pass" and found["max_prompt_length"].detail.startswith(
        "no separate prompt limit"
    )


def test_percentile_matches_numpy():
    values = [5, 1, 9, 3, 7, 2, 8]
    for q in (0, 50, 95, 100):
        assert context.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_reference_model_handling(tmp_path, tok, tiny_model, monkeypatch):
    assert (
        "adapters disabled"
        in by_name(run_checks(cfg(tmp_path, use_peft=True), pairs(5), [], tok))["reference model"].detail
    )
    assert (
        "no reference"
        in by_name(run_checks(cfg(tmp_path, loss_type="simpo", beta=2.0), pairs(5), [], tok))["reference model"].detail
    )
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 1000)  # a machine far too small for a frozen copy
    found = by_name(run_checks(cfg(tmp_path, precompute_ref_log_probs=False), pairs(5), [], tok, model=tiny_model))[
        "reference model"
    ]
    assert found.status == "warn" and "use_peft: true" in found.fix
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 2**40)  # room for the copy
    found = by_name(run_checks(cfg(tmp_path, precompute_ref_log_probs=False), pairs(5), [], tok, model=tiny_model))
    assert (
        found["reference model"].status == "pass" and "with a frozen reference copy" in found["reference model"].detail
    )
    found = by_name(run_checks(cfg(tmp_path), pairs(5), [], tok, model=tiny_model))[
        "reference model"
    ]  # auto precomputes for full fine-tuning
    assert found.status == "pass" and "computed once up front" in found.detail


def test_the_memory_the_reference_check_compares_with_is_the_machines():
    from pathlib import Path

    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total = int(meminfo["MemTotal"].split()[0]) * 1024
    assert abs(checks.available_memory_bytes() - total) < 0.02 * total


def test_eval_split_size(tmp_path, tok):
    assert by_name(run_checks(cfg(tmp_path), pairs(30), [], tok))["eval split"].status == "warn"
    found = by_name(run_checks(cfg(tmp_path), pairs(30), pairs(5, start=100), tok))["eval split"]
    assert found.status == "warn" and "steps of 0.20" in found.detail
    assert by_name(run_checks(cfg(tmp_path), pairs(30), pairs(20, start=100), tok))["eval split"].status == "pass"


def test_busy_output_dir_fails(tmp_path, tok):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("work")
    assert by_name(run_checks(cfg(tmp_path), pairs(5), [], tok))["output_dir"].status == "fail"
    assert by_name(run_checks(cfg(tmp_path, overwrite=True), pairs(5), [], tok))["output_dir"].status == "pass"
    found = by_name(run_checks(cfg(tmp_path, output_dir=str(tmp_path / "none"), resume=True), pairs(5), [], tok))
    assert found["output_dir"].status == "fail" and found["output_dir"].detail.endswith("none holds no run.")


def test_probe_classifies_replies():
    assert checks.looks_like_assistant("The capital of France is Paris.", True) == (True, "")
    assert checks.looks_like_assistant("Paris.\n<|im_start|>user\nAnd Spain?", True)[0] is False
    assert checks.looks_like_assistant("Paris is the capital of France and also", False) == (
        False,
        "it did not stop (no end-of-turn token)",
    )
    assert checks.looks_like_assistant("What is the capital of Spain?", True) == (
        False,
        "it did not answer the question",
    )


def test_random_model_does_not_look_sfted(tmp_path, tok, tiny_model):
    found = by_name(run_checks(cfg(tmp_path), pairs(5), [], tok, model=tiny_model))["starting model"]
    assert found.status == "warn" and "alignkit sft" in found.fix
    orpo = by_name(
        run_checks(
            ORPOConfig(train_data="d.jsonl", output_dir=str(tmp_path / "o")), pairs(5), [], tok, model=tiny_model
        )
    )["starting model"]
    assert orpo.status == "pass" and "fine for orpo" in orpo.detail


def test_a_model_that_answers_like_an_assistant_passes_only_with_a_chat_template(
    tmp_path, tok, tiny_model, monkeypatch
):
    monkeypatch.setattr(checks, "generate_with_stop", lambda *args, **kwargs: ("The capital of France is Paris.", True))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    found = by_name(run_checks(cfg(tmp_path), pairs(5), [], tok, model=tiny_model))["starting model"]
    assert found.status == "pass" and found.detail.startswith("answers like an assistant (")
    tok.chat_template = None
    found = by_name(run_checks(cfg(tmp_path), pairs(5), [], tok, model=tiny_model))["starting model"]
    assert found.status == "warn" and "it has no chat template" in found.detail


def test_other_methods_get_their_own_views(tmp_path, tok):
    from alignkit.data.kto import KTOExample
    from alignkit.data.sft import SFTExample

    kto = [KTOExample(f"Q{i}?", f"A{i}.", i % 2 == 0, f"k.jsonl:{i}") for i in range(6)]
    report = by_name(
        run_checks(KTOConfig(train_data="k.jsonl", output_dir=str(tmp_path / "k"), learning_rate=5e-7), kto, [], tok)
    )
    assert "6 training examples" in report["data size"].detail and "chosen vs rejected" not in report
    sft = [
        SFTExample(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}], None, None, "s.jsonl:1"
        )
    ] * 2
    report = by_name(run_checks(SFTConfig(train_data="s.jsonl", output_dir=str(tmp_path / "s")), sft, [], tok))
    assert (
        report["duplicates"].status == "warn"
        and "beta" not in report
        and "no reference" in report["reference model"].detail
    )


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(n, start=0):
    return [
        {"prompt": f"What is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"Let me think at length: {2 * i + 1}."}
        for i in range(start, start + n)
    ]


def test_cli_exit_status_and_table(tmp_path, tiny_model_dir, capsys):
    train = write_rows(tmp_path / "train.jsonl", rows(10))
    held = write_rows(tmp_path / "held.jsonl", rows(3, start=8))  # two rows leak from train
    args = ["doctor", "--model", str(tiny_model_dir), "--train_data", str(train), "--output_dir", str(tmp_path / "out")]
    assert main(args + ["--eval_data", str(held)]) == 1
    err = capsys.readouterr().err
    assert "train/eval leakage" in err and "fail" in err and "1 failed" in err
    assert main(args + ["--eval_split", "0.2"]) == 0
    assert "0 failed" in capsys.readouterr().err
    bad = write_rows(tmp_path / "bad.jsonl", [{"prompt": "x", "chosen": "a"}])
    assert main(["doctor", "--model", str(tiny_model_dir), "--train_data", str(bad)]) == 1
    assert "bad.jsonl:1: field 'rejected'" in capsys.readouterr().err
    assert (
        main(
            [
                "doctor",
                "--method",
                "kto",
                "--model",
                str(tiny_model_dir),
                "--train_data",
                str(train),
                "--output_dir",
                str(tmp_path / "k"),
            ]
        )
        == 0
    )


def test_the_doctor_checks_rl_configs(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from conftest import write_prompts

    monkeypatch.setenv("COLUMNS", "300")  # one line per finding
    from alignkit.cli import main

    prompts = write_prompts(tmp_path / "prompts.jsonl")
    base = ["--model", str(tiny_model_dir), "--train_data", str(prompts), "--max_new_tokens", "8"]
    assert main(["doctor", "--method", "grpo", *base, "--eval_split", "0.25"]) == 0
    err = capsys.readouterr().err
    assert "prompt length" in err and "sample answers score from" in err and "0 failed" in err
    # a verifier needs answers: rows without them fail as data; a length-only reward is fine but a regex that
    # matches nothing gives every answer the same score (no signal)
    no_answers = tmp_path / "no_answers.jsonl"
    no_answers.write_text('{"prompt": "What is 2 + 2?"}\n' * 4)
    assert main(["doctor", "--method", "ppo", "--model", str(tiny_model_dir), "--train_data", str(no_answers)]) == 1
    assert main(["doctor", "--method", "rloo", *base, "--rewards", "[{kind: regex, pattern: zzz}]"]) == 0
    assert "no signal" in capsys.readouterr().err
    assert main(["doctor", "--method", "rloo", *base, "--max_new_tokens", "300"]) == 1  # 256 positions
    assert "exceeds the model's 256 positions" in capsys.readouterr().err


def test_training_runs_the_checks_first_and_a_fail_writes_nothing(tmp_path, tiny_model_dir, capsys):
    from alignkit.configs import load_config
    from alignkit.train.dpo import train_dpo

    train = write_rows(tmp_path / "train.jsonl", rows(10))
    held = write_rows(tmp_path / "held.jsonl", rows(3, start=8))
    out = tmp_path / "out"
    args = [
        "--model",
        str(tiny_model_dir),
        "--train_data",
        str(train),
        "--eval_data",
        str(held),
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--disable_tqdm",
        "--report_to",
        "none",
        "--max_length",
        "64",
        "--max_prompt_length",
        "32",
    ]
    with pytest.raises(PreflightError, match="train/eval leakage"):
        train_dpo(load_config(DPOConfig, None, args))
    assert not out.exists()
    assert "pre-flight checks" in capsys.readouterr().err
    train_dpo(load_config(DPOConfig, None, args + ["--preflight", "false"]))
    assert (out / "final").is_dir()


def test_a_lora_reward_model_gets_no_generation_probe(tmp_path, tok):
    from alignkit.configs import RewardConfig
    from alignkit.models.loading import apply_lora

    classifier = build_reward_model(len(tok)).train()
    wrapped = apply_lora(classifier, 4, 8, 0.0, "all-linear", "SEQ_CLS")
    assert hasattr(wrapped, "generate")  # PEFT adds it, though a classifier cannot generate
    report = by_name(
        run_checks(
            RewardConfig(train_data="d.jsonl", output_dir=str(tmp_path / "r"), use_peft=True, learning_rate=1e-4),
            pairs(5),
            [],
            tok,
            model=wrapped,
        )
    )
    assert "starting model" not in report and "no reference" in report["reference model"].detail


def test_a_flawed_config_gets_every_finding_and_the_ruinous_ones_fail(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The issue's config: learning rate 0.01 (full fine-tuning), beta 5, four pairs of which two are
    identical, max_length 16, and a value that fails validation: each is reported, nothing hides the rest."""
    data = write_rows(tmp_path / "four.jsonl", rows(3) + rows(1))  # the fourth repeats the first
    args = [
        "doctor",
        "--model",
        str(tiny_model_dir),
        "--train_data",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
        "--learning_rate",
        "0.01",
        "--beta",
        "5",
        "--max_length",
        "16",
        "--eval_split",
        "0",
        "--max_prompt_length",
        "64",
        "--warmup_ratio",
        "2",
    ]
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    assert main(args) == 1
    err = capsys.readouterr().err
    for finding in (
        "config: max_prompt_length",
        "must be smaller than max_length (16)",
        "config: warmup_ratio",
        "learning_rate 0.01 is an order of magnitude outside",
        "beta 5 is outside",
        "4 training pairs, fewer than one batch",
        "1 training rows repeat",
        "truncates 100.0% of training rows",
    ):
        assert finding in err, finding
    assert (
        "5 failed" in err
    )  # two invalid values, learning rate, data size, truncation; beta and the repeat are warnings
