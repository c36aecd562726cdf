"""Every validation fault names the file, the 1-based line (or row), the field and the fault."""

import json

import pytest

from alignkit.data.preference import load_preference_data
from alignkit.errors import AlignkitError, DataValidationError

GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}


def write_lines(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def faults_of(path):
    with pytest.raises(DataValidationError) as info:
        load_preference_data(str(path))
    return info.value, str(info.value)


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"chosen": "c", "rejected": "r"}, "prompt", "missing"),
        ({"prompt": "p", "rejected": "r"}, "chosen", "missing"),
        ({"prompt": "p", "chosen": 3, "rejected": "r"}, "chosen", "expected a string or a list"),
        ({"prompt": "   ", "chosen": "c", "rejected": "r"}, "prompt", "empty text"),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "rejected", "identical to chosen"),
        (
            {"prompt": [{"role": "robot", "content": "hi"}], "chosen": "c", "rejected": "r"},
            "prompt[0].role",
            "unknown role 'robot'",
        ),
        (
            {"prompt": [{"role": "user", "content": 5}], "chosen": "c", "rejected": "r"},
            "prompt[0].content",
            "expected a string",
        ),
        (
            {"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"},
            "prompt[0].content",
            "expected a string, got NoneType",
        ),
        ({"prompt": [], "chosen": "c", "rejected": "r"}, "prompt", "empty list of messages"),
        (
            {"prompt": "p", "chosen": [{"role": "user", "content": "c"}], "rejected": "r"},
            "chosen",
            "exactly one assistant message",
        ),
    ],
)
def test_each_fault_is_named_with_file_line_and_field(tmp_path, row, field, message):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, GOOD, row])
    error, text = faults_of(path)
    assert len(error.faults) == 1
    fault = error.faults[0]
    assert fault.where == f"{path}:3"
    assert fault.field == field
    assert message in fault.message
    assert f"{path}:3: field '{field}':" in text


def test_invalid_json_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, '{"prompt": "p", "chosen": ', GOOD])
    error, _ = faults_of(path)
    assert error.faults[0].where == f"{path}:2"
    assert error.faults[0].message.startswith("invalid JSON")


def test_not_an_object(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, "[1, 2]"])
    error, _ = faults_of(path)
    assert error.faults[0].where == f"{path}:2" and "expected an object" in error.faults[0].message


def test_all_faults_reported_at_once_up_to_a_limit(tmp_path):
    rows = [GOOD] + [{"prompt": "p", "chosen": "x", "rejected": "x"}] * 30
    path = write_lines(tmp_path / "d.jsonl", rows)
    error, text = faults_of(path)
    assert error.total == 30 and len(error.faults) == 20
    assert [f.where for f in error.faults[:2]] == [f"{path}:2", f"{path}:3"]
    assert "and 10 more" in text


def test_blank_lines_keep_line_numbers(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, "", {"prompt": "p"}])
    error, _ = faults_of(path)
    assert {f.where for f in error.faults} == {f"{path}:3"}
    assert {f.field for f in error.faults} == {"chosen", "rejected"}


def test_conversational_and_implicit_prompt_forms(tmp_path):
    conversational = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
        "score": 3,
    }
    implicit = {
        "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
        "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "b"}],
    }
    examples = load_preference_data(str(write_lines(tmp_path / "d.jsonl", [conversational, implicit])))
    assert examples[0].prompt == [{"role": "user", "content": "hi"}] and examples[0].chosen == "a"
    assert examples[1].prompt == [{"role": "user", "content": "hi"}] and (examples[1].chosen, examples[1].rejected) == (
        "a",
        "b",
    )


def test_implicit_prompts_of_text_and_multi_turn_conversations_margins_and_their_faults(tmp_path):
    """TRL's implicit prompt: a transcript's shared words up to the last space before the answers part (as
    TRL's extract_prompt), or a conversation's shared leading messages; a margin is a number; each fault is
    named by line, and a file of nothing is refused."""
    user, assistant = ({"role": r, "content": c} for r, c in (("user", "a"), ("assistant", "b")))
    rows = [
        {
            "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
            "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: Five.",
        },
        {
            "chosen": [user, assistant, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
            "rejected": [user, assistant, {"role": "user", "content": "c"}, {"role": "assistant", "content": "e"}],
        },
        {"prompt": "p", "chosen": "c", "rejected": "r", "margin": 2},
    ]
    text, turns, scored = load_preference_data(str(write_lines(tmp_path / "ok.jsonl", rows)))
    assert (text.prompt, text.chosen, text.rejected) == ("\n\nHuman: What is 2+2?\n\nAssistant:", " 4.", " Five.")
    assert (turns.prompt, turns.chosen, turns.rejected) == (
        [user, assistant, {"role": "user", "content": "c"}],
        "d",
        "e",
    )
    assert (scored.margin, text.margin) == (2.0, None)
    bad = [
        {"chosen": "Yes", "rejected": "No"},
        {"chosen": [user], "rejected": [{"role": "user", "content": "other"}]},
        {"prompt": "p", "chosen": "c", "rejected": "r", "margin": True},
        {"prompt": "p", "chosen": "c", "rejected": "r", "margin": "2"},
        [1, 2],
    ]
    error, _ = faults_of(write_lines(tmp_path / "bad.jsonl", bad))
    assert [(f.where.rsplit(":", 1)[1], f.field, f.message) for f in error.faults] == [
        ("1", "prompt", "missing, and chosen/rejected share no leading words to use as the prompt"),
        ("2", "prompt", "missing, and chosen/rejected share no leading messages to use as the prompt"),
        ("3", "margin", "expected a number, got True"),
        ("4", "margin", "expected a number, got '2'"),
        ("5", None, "expected an object with prompt/chosen/rejected, got list"),
    ]
    (tmp_path / "blank.jsonl").write_text("\n")
    with pytest.raises(AlignkitError, match="blank.jsonl: contains no rows"):
        load_preference_data(str(tmp_path / "blank.jsonl"))


def test_json_parquet_and_saved_dataset_formats(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [GOOD, {"prompt": "p2", "chosen": "c2", "rejected": "c2"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("d.json", "d.parquet", "saved"):
        error, _ = faults_of(tmp_path / name)
        assert error.faults[0].where == f"{tmp_path / name} row 2"
        assert error.faults[0].field == "rejected"
    good = [GOOD, {"prompt": "p2", "chosen": "c2", "rejected": "r2"}]
    pq.write_table(pa.Table.from_pylist(good), tmp_path / "ok.parquet")
    assert [e.chosen for e in load_preference_data(str(tmp_path / "ok.parquet"))] == ["c", "c2"]


def test_invalid_json_file_reports_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"prompt": "p",\n  "chosen": }\n]')
    error, _ = faults_of(path)
    assert error.faults[0].where == f"{path}:3"


def test_files_as_other_tools_save_them(tmp_path):
    """A UTF-8 byte-order mark (Notepad, PowerShell, Excel), gzip, CSV and TSV read like JSONL; a quoted CSV cell
    may span lines, and a row is named by the line it starts on."""
    import gzip

    line = json.dumps(GOOD) + "\n"
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + line.encode())
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD]).encode())
    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress((line * 2).encode()))
    (tmp_path / "rows.csv").write_text('prompt,chosen,rejected\n"two\nlines","c, with a comma",r\np2,c2,r2\n')
    (tmp_path / "rows.tsv").write_text("prompt\tchosen\trejected\np\tc\tr\n")
    read = {name: load_preference_data(str(tmp_path / name)) for name in sorted(p.name for p in tmp_path.iterdir())}
    assert {name: len(rows) for name, rows in read.items()} == {
        "bom.json": 1,
        "bom.jsonl": 1,
        "rows.csv": 2,
        "rows.jsonl.gz": 2,
        "rows.tsv": 1,
    }
    first, second = read["rows.csv"]
    assert (first.prompt, first.chosen, first.where) == ("two\nlines", "c, with a comma", f"{tmp_path}/rows.csv:2")
    assert (second.prompt, second.where) == ("p2", f"{tmp_path}/rows.csv:4")

    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,chosen,rejected\np,c,r\np,c\n")
    assert f"{bad}:3: 2 cells where the header has 3 (prompt, chosen, rejected)" in faults_of(bad)[1]
    bad.write_text("prompt,chosen,rejected\np,c,r\np,,r\n")
    assert f"{bad}:3: field 'chosen': missing" in faults_of(bad)[1]  # an empty cell is a missing field


def test_text_that_is_not_utf8_is_named_by_line_and_column(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes((json.dumps(GOOD) + "\n" + '{"prompt": "caf\xe9"}\n').encode("latin-1"))
    _, text = faults_of(latin)
    assert f"{latin}:2: not UTF-8 text (byte 0xe9, column 16); save the file as UTF-8" in text
    whole = tmp_path / "latin.json"
    whole.write_bytes('[{"prompt": "p",\n "chosen": "caf\xe9", "rejected": "r"}]'.encode("latin-1"))
    _, text = faults_of(whole)
    assert f"{whole}:2: not UTF-8 text (byte 0xe9, column 16)" in text


def test_where_data_comes_from_files_lists_folders_and_hub_ids(tmp_path, monkeypatch):
    """A missing path is named; a comma-separated list is read one file after another unless a file of that
    very name exists; ``owner/name[/data_dir]`` is a hub dataset (its repo and data_dir passed apart), a
    relative or data-file path is not; a hub failure is one clear error."""
    import datasets

    from alignkit.data.records import data_sources, read_records
    from alignkit.errors import AlignkitError

    with pytest.raises(AlignkitError, match=f"data not found: {tmp_path / 'none.jsonl'} \\(no such file or folder\\)"):
        read_records(tmp_path / "none.jsonl")
    monkeypatch.chdir(tmp_path)  # a relative path says where it was looked for
    with pytest.raises(
        AlignkitError, match=f"data not found: data/none.jsonl \\(no such file or folder under {tmp_path}: "
    ):
        read_records("data/none.jsonl")
    (tmp_path / "notes.txt").write_text("x\n")
    with pytest.raises(AlignkitError, match="notes.txt: unsupported data file type '.txt'"):
        read_records(tmp_path / "notes.txt")
    a, b = write_lines(tmp_path / "a.jsonl", [GOOD]), write_lines(tmp_path / "b.jsonl", [GOOD, GOOD])
    assert [r.where for r in read_records(f"{a}, {b}")] == [f"{a}:1", f"{b}:1", f"{b}:2"]
    comma = write_lines(tmp_path / "x,y.jsonl", [GOOD])
    assert data_sources(str(comma)) == [str(comma)]

    calls = []

    def load_dataset(repo, data_dir=None, split=None):
        calls.append((repo, data_dir, split))
        if repo == "owner/broken":
            raise ConnectionError("no route to host")
        return [GOOD]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert [r.where for r in read_records("owner/name/dpo", split="test")] == ["owner/name/dpo row 1"]
    assert read_records("owner/name")[0].data == GOOD
    assert calls == [("owner/name", "dpo", "test"), ("owner/name", None, "train")]
    with pytest.raises(AlignkitError, match="could not load dataset 'owner/broken' \\(split 'train'\\).*no route"):
        read_records("owner/broken")
    for not_hub in ("./owner/name", "owner/name/pairs.jsonl", "data/pairs.csv.gz", "owner//name", "pairs"):
        with pytest.raises(AlignkitError, match=f"data not found: {not_hub}"):
            read_records(not_hub)
    assert len(calls) == 3


def test_json_shapes_csv_without_rows_and_saved_splits(tmp_path):
    import datasets

    from alignkit.data.records import read_records
    from alignkit.errors import AlignkitError

    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [GOOD, GOOD]}))  # one key holding the rows
    assert [r.where for r in read_records(tmp_path / "wrapped.json")] == [
        f"{tmp_path / 'wrapped.json'} row {i}" for i in (1, 2)
    ]
    (tmp_path / "object.json").write_text(json.dumps(GOOD))
    with pytest.raises(DataValidationError, match="expected a JSON array of objects"):
        read_records(tmp_path / "object.json")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "blank.csv").write_text("prompt,chosen,rejected\n,,\np,c,r\n")
    assert read_records(tmp_path / "empty.csv") == []
    assert [r.where for r in read_records(tmp_path / "blank.csv")] == [f"{tmp_path / 'blank.csv'}:3"]
    datasets.DatasetDict({"train": datasets.Dataset.from_list([GOOD])}).save_to_disk(str(tmp_path / "dd"))
    assert read_records(tmp_path / "dd")[0].data == GOOD
    with pytest.raises(AlignkitError, match=r"dd: has splits \['train'\], none named 'test'"):
        read_records(tmp_path / "dd", split="test")
    (tmp_path / "plain").mkdir()
    with pytest.raises(AlignkitError, match="plain: not a datasets.save_to_disk folder"):
        read_records(tmp_path / "plain")


def test_the_held_out_split_is_a_seeded_shuffle_of_at_least_one_row():
    from alignkit.data.records import split_train_eval

    items = list(range(40))
    train, held = split_train_eval(items, 0.1, seed=3)
    assert len(held) == 4 and sorted(train + held) == items and train == sorted(train)
    assert split_train_eval(items, 0.1, seed=3) == (train, held)
    assert held != items[:4] and held != items[-4:]  # shuffled, not a slice
    assert len({tuple(split_train_eval(items, 0.1, seed=s)[1]) for s in range(5)}) > 1  # the seed decides
    assert [len(split_train_eval(items[:n], f, 0)[1]) for n, f in ((3, 0.01), (2, 0.9), (1, 0.5), (9, 0))] == [
        1,
        1,
        0,
        0,
    ]


def test_renamed_fields_eval_data_and_prompt_templates(tmp_path):
    """``data_fields`` renames only the fields it names (``question`` -> prompt; chosen/rejected keep theirs);
    ``eval_data`` is the held-out set when given; a prompt template formats plain prompts and leaves rows
    without a prompt (SFT's conversations) as they are; ``write_jsonl`` makes its folder and keeps UTF-8."""
    from alignkit.configs import DPOConfig, load_config
    from alignkit.data.records import load_train_eval, read_records, with_prompt_template, write_jsonl

    rows = [{"question": f"q{i}", "chosen": "c", "rejected": "r", "id": i} for i in range(3)]
    write_jsonl(tmp_path / "new" / "folder" / "train.jsonl", rows)
    write_jsonl(tmp_path / "eval.jsonl", [{"question": "café?", "chosen": "oui", "rejected": "non"}])
    assert "café?" in (tmp_path / "eval.jsonl").read_text(encoding="utf-8")
    (first, *_) = read_records(tmp_path / "new" / "folder" / "train.jsonl", fields={"prompt": "question"})
    assert first.data == {"prompt": "q0", "chosen": "c", "rejected": "r", "id": 0}
    args = [
        "--train_data",
        str(tmp_path / "new" / "folder" / "train.jsonl"),
        "--eval_data",
        str(tmp_path / "eval.jsonl"),
    ]
    config = load_config(DPOConfig, None, [*args, "--data_fields", "{prompt: question}", "--eval_split", "0.5"])
    train, held = load_train_eval(config, load_preference_data)
    assert [e.prompt for e in train] == ["q0", "q1", "q2"] and [(e.prompt, e.chosen) for e in held] == [
        ("café?", "oui")
    ]
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert with_prompt_template([{"prompt": "2+2"}, chat], "Q: {} A:") == [{"prompt": "Q: 2+2 A:"}, chat]
