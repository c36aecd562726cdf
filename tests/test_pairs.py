"""`alignkit pairs` and `alignkit annotate` export/import on tiny models and known inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from alignkit.cli import main
from alignkit.commands.annotate import annotate
from alignkit.commands.pairs import build_pairs
from alignkit.commands.serve import serving
from alignkit.configs import AnnotateConfig, PairsConfig, load_config
from alignkit.data.preference import load_preference_data
from alignkit.errors import ConfigError, DataValidationError, RunDirError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prompts_file(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"prompt": "What is 2 + 3?", "answer": 5, "reference": "2 + 3 = 5."},
            {"prompt": "What is 4 + 4?", "answer": 8, "reference": "4 + 4 = 8."},
            {"prompt": "What is my cat's name?", "answer": None, "reference": "I'm not sure."},
        ],
    )


def test_sample_rank_with_verifier_puts_the_verified_reference_first(tmp_path, tiny_model_dir):
    # The tiny random model never answers right, so the verified reference is always chosen.
    config = PairsConfig(
        prompts=str(prompts_file(tmp_path)),
        output=str(tmp_path / "pairs.jsonl"),
        method="sample_rank",
        generator=str(tiny_model_dir),
        num_samples=3,
        max_new_tokens=6,
        disable_tqdm=True,
    )
    result = build_pairs(config)
    assert [r["chosen"] for r in result.rows] == ["2 + 3 = 5.", "4 + 4 = 8.", "I'm not sure."]
    assert all(
        r["provenance"]["rejected_source"].startswith("sample") and r["provenance"]["scores"]["reference"] == 1.0
        for r in result.rows
    )
    assert result.summary["kept"] == 3 and result.summary["scorer"] == "verifier"
    assert len(load_preference_data(config.output)) == 3  # the trainers read it as is
    with pytest.raises(RunDirError, match="already exists"):
        build_pairs(config)
    first_two = build_pairs(config.model_copy(update={"max_prompts": 2, "overwrite": True}))
    assert [r["chosen"] for r in first_two.rows] == ["2 + 3 = 5.", "4 + 4 = 8."] and first_two.summary["prompts"] == 2


def test_system_prompt_contrast_through_a_served_model(tmp_path, tiny_model_dir):
    rows = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": f"Say something about {w}."} for w in ("cats", "numbers", "rain", "tea")]
    )
    with serving(str(tiny_model_dir), served_model_name="tiny") as url:
        config = PairsConfig(
            prompts=str(rows),
            output=str(tmp_path / "pairs.jsonl"),
            generator_base_url=url,
            generator_model="tiny",
            chosen_max_new_tokens=6,
            rejected_max_new_tokens=12,
            chosen_temperature=1.0,
            rejected_temperature=1.0,
            disable_tqdm=True,
            good_system_prompts=["Be brief.", "Be kind."],
        )
        result = build_pairs(config)
    assert result.summary["kept"] + sum(result.summary["dropped"].values()) == 4
    assert result.summary["generator"] == "endpoint:tiny" and result.summary["requests"] == 8
    for i, row in enumerate(result.rows):
        assert row["chosen"] != row["rejected"] and row["provenance"]["rejected_system_prompt"] == "bad[0]"
    assert {r["provenance"]["chosen_system_prompt"] for r in result.rows} <= {"good[0]", "good[1]"}
    cached = len(Path(config.cache_path()).read_text().splitlines())
    assert cached == 8  # every reply kept, so a rerun asks nothing


def test_sample_rank_all_pairs_with_a_heuristic(tmp_path):
    from alignkit.commands.pairs import _sample_rank_pairs
    from alignkit.judges.scorers import HeuristicScorer

    class Canned:
        name = "canned"

        def generate(self, prompts, *, seed, **_):
            return [["short", "a bit longer", "short", "the longest answer here"][seed]] * len(prompts)

    config = PairsConfig(
        prompts="unused",
        output="unused",
        method="sample_rank",
        scorer="heuristic",
        pairing="all",
        include_reference=False,
    )
    pairs, summary = _sample_rank_pairs(config, [{"prompt": "q", "where": "f:1"}], Canned(), HeuristicScorer("length"))
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("short", "a bit longer"),
        ("short", "the longest answer here"),
        ("a bit longer", "the longest answer here"),
    ]
    assert summary.kept == 3 and pairs[0]["provenance"]["generator"] == "canned"


def test_system_prompt_contrast_keeps_and_drops_each_pair_for_its_reason():
    """Prompts rotate over the good system prompts; a pair is dropped for an empty answer, for identical
    answers, or (with a scorer) when the good-prompt answer does not beat the other by more than the gap."""
    from alignkit.commands.pairs import _contrast_pairs
    from alignkit.judges.scorers import HeuristicScorer

    class Canned:
        name = "canned"

        def __init__(self):
            self.calls = []

        def generate(self, prompts, *, system_prompt, seed, **_):
            self.calls.append((system_prompt, prompts, seed))
            good = {"p0": "Yes.", "p1": "  ", "p2": "Same.", "p3": "Short.", "p4": "Fine answer."}
            bad = {"p0": "Well, maybe yes.", "p1": "Long.", "p2": " Same. ", "p3": "Tiny", "p4": "A much longer one."}
            return [(bad if system_prompt == "Be vague." else good)[p] for p in prompts]

    config = PairsConfig(
        prompts="unused",
        output="unused",
        good_system_prompts=["Be brief.", "Be exact."],
        bad_system_prompts=["Be vague."],
    )
    rows = [{"prompt": f"p{i}", "where": f"f:{i + 1}"} for i in range(5)]
    generator = Canned()
    pairs, summary = _contrast_pairs(config, rows, generator, None)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("p0", "Yes.", "Well, maybe yes."),
        ("p3", "Short.", "Tiny"),
        ("p4", "Fine answer.", "A much longer one."),
    ]
    assert summary.as_dict() == {
        "kept": 3,
        "dropped": {"with an empty answer": 1, "with identical answers under both system prompts": 1},
    }
    assert [p["provenance"]["chosen_system_prompt"] for p in pairs] == ["good[0]", "good[1]", "good[0]"]
    assert [(c[0], c[1], c[2]) for c in generator.calls] == [
        ("Be brief.", ["p0", "p2", "p4"], config.seed),
        ("Be exact.", ["p1", "p3"], config.seed),
        ("Be vague.", ["p0", "p1", "p2", "p3", "p4"], config.seed + 1),
    ]
    # shorter is better: "Tiny" (1 word) beats "Short." (1 word) by nothing, so with a gap of 0 that pair goes
    pairs, summary = _contrast_pairs(config, rows, Canned(), HeuristicScorer("length"))
    assert [p["prompt"] for p in pairs] == ["p0", "p4"] and summary.kept == 2
    assert summary.dropped["where the scorer did not prefer the good-prompt answer"] == 1
    assert pairs[0]["provenance"]["scores"] == {"chosen": -1.0, "rejected": -3.0}


def test_prompt_file_faults_name_file_line_and_field(tmp_path):
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"prompt": "ok", "answer": 1}, {"question": "x"}, {"prompt": "y", "tests": "assert 1"}, {"prompt": "z"}],
    )
    config = PairsConfig(prompts=str(bad), output=str(tmp_path / "o.jsonl"), method="sample_rank")
    with pytest.raises(DataValidationError) as caught:
        build_pairs(config)
    text = str(caught.value)
    assert f"{bad}:2: field 'prompt': missing" in text
    assert f"{bad}:3: field 'tests': expected a non-empty list" in text
    assert f"{bad}:4: field 'answer': missing" in text
    assert not (tmp_path / "o.jsonl").exists()


def test_config_checks_say_what_is_missing():
    with pytest.raises(ConfigError, match="sample_rank needs a scorer"):
        load_config(PairsConfig, None, {"prompts": "p", "output": "o", "method": "sample_rank", "scorer": "none"})
    with pytest.raises(ConfigError, match="scorer 'judge' needs judge_base_url"):
        load_config(PairsConfig, None, {"prompts": "p", "output": "o", "scorer": "judge"})
    with pytest.raises(ConfigError, match="judge_model is required"):
        load_config(AnnotateConfig, None, {"input": "i", "output": "o", "judge_base_url": "http://127.0.0.1:1/v1"})
    assert PairsConfig(prompts="p", output="o").cache_path() == "o.cache.jsonl"


def test_export_then_import_human_labels(tmp_path):
    rows = write_jsonl(
        tmp_path / "rows.jsonl",
        [{"prompt": f"Q{i}?", "response_a": f"first {i}", "response_b": f"second {i}"} for i in range(8)],
    )
    sheet = tmp_path / "sheet.csv"
    annotate(AnnotateConfig(input=str(rows), output=str(sheet), mode="export", seed=3))
    with open(sheet, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["id", "prompt", "response_1", "response_2", "label"]  # blind: nothing says which is A
    shown_first = [r["response_1"].split()[0] for r in table]
    assert "first" in shown_first and "second" in shown_first  # randomised order
    # The annotator prefers every "second" response; row 7 is a tie, row 8 is not labelled yet.
    for r in table:
        r["label"] = "1" if r["response_1"].startswith("second") else "2"
    table[6]["label"], table[7]["label"] = "tie", ""
    table[0]["label"] = "maybe"
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    config = AnnotateConfig(input=str(sheet), output=str(tmp_path / "pairs.jsonl"), mode="import")
    with pytest.raises(DataValidationError, match=rf"{sheet}:2: field 'label': 'maybe' is not a label"):
        annotate(config)
    table[0]["label"] = "1" if table[0]["response_1"].startswith("second") else "2"
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    report = annotate(config)
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [p["prompt"] for p in pairs] == [f"Q{i}?" for i in range(6)]
    assert all(p["chosen"].startswith("second") and p["rejected"].startswith("first") for p in pairs)
    assert report == {"kept": 6, "dropped": {"labelled a tie": 1, "not labelled yet": 1}}


def test_a_jsonl_sheet_round_trip_its_key_and_labels_by_letter(tmp_path):
    from alignkit.errors import AlignkitError

    rows = write_jsonl(
        tmp_path / "rows.jsonl",
        [{"prompt": f"Q{i}?", "response_a": f"first {i}", "response_b": f"second {i}"} for i in range(4)],
    )
    sheet = tmp_path / "sheet.jsonl"
    export = AnnotateConfig(input=str(rows), output=str(sheet), mode="export", seed=3)
    assert annotate(export) == {"rows": 4, "sheet": str(sheet), "key": f"{sheet}.key.jsonl"}
    sheet.unlink()  # the sheet is gone but its key is not: a second export must not replace the key
    with pytest.raises(RunDirError, match="sheet.jsonl.key.jsonl"):
        annotate(export)
    export = export.model_copy(update={"overwrite": True})
    annotate(export)
    table = [json.loads(line) for line in sheet.read_text().splitlines()]
    for row in table:  # a and b stand for the first and second response shown
        row["label"] = "A" if row["response_1"].startswith("second") else "b"
    sheet.write_text("".join(json.dumps(r) + "\n" for r in table))
    out = tmp_path / "pairs.jsonl"
    assert annotate(AnnotateConfig(input=str(sheet), output=str(out), mode="import")) == {"kept": 4, "dropped": {}}
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(f"second {i}", f"first {i}") for i in range(4)]
    Path(f"{sheet}.key.jsonl").unlink()
    with pytest.raises(AlignkitError, match=f"key file not found: {sheet}.key.jsonl"):
        annotate(AnnotateConfig(input=str(sheet), output=str(out), mode="import", overwrite=True))


def test_cli_pairs_reports_bad_input_with_exit_2(tmp_path, capsys):
    assert main(["pairs", "--prompts", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 1
    assert "data not found" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err


def test_a_build_that_keeps_no_pair_fails_after_writing_why(tmp_path, monkeypatch):
    """Every answer identical under both system prompts: the (empty) pairs file and its summary are written,
    and the command fails naming the reasons and the summary file."""
    import alignkit.commands.pairs as pairs_command
    from alignkit.errors import AlignkitError

    class SameEverywhere:
        name = "same"

        def __init__(self, *args):
            pass

        def generate(self, prompts, **_):
            return ["The same."] * len(prompts)

    monkeypatch.setattr(pairs_command, "LocalGenerator", SameEverywhere)
    rows = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(
        AlignkitError, match=f"no pairs were kept \\(0 pairs kept; dropped: 2 with identical .*{out}.summary"
    ):
        build_pairs(PairsConfig(prompts=str(rows), output=str(out), disable_tqdm=True))
    assert out.read_text() == "" and json.loads(Path(f"{out}.summary.json").read_text())["prompts"] == 2


def test_judged_rows_become_pairs_by_the_verdict_and_ties_are_dropped_by_reason(tmp_path, monkeypatch):
    """The judge's verdicts, as they come back: first or second wins a pair; a consistent tie and an
    inconsistent one (position bias) are dropped under their own reasons, and so are identical answers."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    import alignkit.commands.annotate as annotate_command
    from alignkit.judges.llm_judge import PairwiseResult

    verdicts = {
        "q1": PairwiseResult("first", True, ["A", "B"]),
        "q2": PairwiseResult("second", True, ["B", "A"]),
        "q3": PairwiseResult("tie", True, ["tie", "tie"]),
        "q4": PairwiseResult("tie", False, ["A", "A"]),
        "q5": PairwiseResult("first", True, ["A", "B"]),
    }

    class FakeJob:
        def __init__(self, config):
            self.client = SimpleNamespace(
                settings=SimpleNamespace(model="judge-x"), map=lambda rows, fn, **_: [fn(row) for row in rows]
            )

        def judge(self):
            return SimpleNamespace(client=self.client, compare=lambda prompt, a, b: verdicts[prompt])

        def guard(self):
            return nullcontext()

        def stats(self):
            return {"requests": 0}

    monkeypatch.setattr(annotate_command, "EndpointJob", FakeJob)
    rows = [{"prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(1, 5)]
    rows.append({"prompt": "q5", "response_a": "same", "response_b": "same"})
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    config = AnnotateConfig(input=str(source), output=str(out), judge_base_url="http://x", judge_model="judge-x")
    report = annotate(config)
    assert report == {
        "kept": 2,
        "dropped": {
            "judged a tie": 1,
            "inconsistent verdicts across the two orders (position bias)": 1,
            "with identical responses": 1,
        },
        "rows": 5,
        "requests": 0,
    }
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a1", "b1"), ("b2", "a2")]
    assert pairs[1]["provenance"] == {"annotator": "judge:judge-x", "verdicts": ["B", "A"], "source_row": f"{source}:2"}
