"""Every validation fault names the file, the 1-based line (or row), the field and the fault."""

import json

import pytest

from alignkit.data.preference import load_preference_data
from alignkit.errors import DataValidationError

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
