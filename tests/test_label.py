"""`alignkit label`: agreement statistics against hand-computed values, the API's blinding, storage
and refusals, and the exports."""

import json
import math
import sqlite3

import pytest
from fastapi.testclient import TestClient

from alignkit.cli import main
from alignkit.commands.label.app import create_app
from alignkit.commands.label.project import shown_left
from alignkit.commands.label.stats import (
    bootstrap_interval,
    cohen_kappa,
    krippendorff_alpha,
    label_stats,
    majority,
    side,
)


def test_cohen_kappa_by_hand():
    first = ["a", "a", "b", "b", "a", "tie"]
    second = ["a", "b", "b", "b", "a", "a"]
    # p_o = 4/6; p_e = (3*3 [a] + 2*3 [b] + 1*0 [tie]) / 36 = 15/36; kappa = (24/36 - 15/36) / (21/36) = 9/21
    assert cohen_kappa(first, second) == pytest.approx(9 / 21)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == 1.0


def test_krippendorff_alpha_by_hand():
    # coincidences: o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6
    # D_o = 2, D_e = (3*3 + 3*3) / 5 = 3.6, alpha = 1 - 2 / 3.6
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(1 - 2 / 3.6)
    # three raters on one unit in full agreement plus a split unit; a unit with one label is not pairable
    # unit 1: o_aa = 3 * 2 / 2 = 3; unit 2 (a, a, b): o_aa = 2/2 = 1, o_ab = o_ba = 2/2 = 1; n_a = 5, n_b = 1, n = 6
    # D_o = 2, D_e = (5*1 + 1*5) / 5 = 2, alpha = 0
    assert krippendorff_alpha([["a", "a", "a"], ["a", "a", "b"], ["b"]]) == pytest.approx(0.0)
    # no unit holds two labels: nothing to agree on, not perfect agreement
    assert math.isnan(krippendorff_alpha([["a"], ["b"], []]))


def test_agreement_on_one_category_five_point_sides_and_the_interval_by_the_normal_approximation():
    # every label the same: the chance agreement is total, and the agreement is called perfect
    assert cohen_kappa(["a", "a", "a"], ["a", "a", "a"]) == 1.0
    assert krippendorff_alpha([["b", "b"], ["b", "b", "b"]]) == 1.0
    assert [side({"score": s}) for s in (1, 2, 3, 4, 5)] == ["a", "a", "tie", "b", "b"]
    assert side({"score": None, "choice": "up"}) == "up"
    # 40 outcomes at 0.5: the percentile interval is about 0.5 +- 1.96 * sqrt(0.25 / 40) = 0.345-0.655
    low, high = bootstrap_interval([True, False] * 20, seed=1)
    assert low == pytest.approx(0.345, abs=0.03) and high == pytest.approx(0.655, abs=0.03)
    # a label without the side it was shown on (an export of an older project) says nothing of position
    labels = [
        {"annotator": "x", "item_id": "1", "choice": "a", "score": None, "shown_left": "a"},
        {"annotator": "x", "item_id": "2", "choice": "a", "score": None, "shown_left": None},
        {"annotator": "x", "item_id": "3", "choice": "tie", "score": None, "shown_left": "b"},
    ]
    assert label_stats(labels, [], ["x"])["position_bias"] == {"left_wins": 1, "decided": 1, "left_win_rate": 1.0}


def test_the_stats_read_as_lines():
    from alignkit.commands.label.report import stats_lines

    stats = {
        "labels": 7,
        "items": 5,
        "items_labelled": 4,
        "per_annotator": {"x": 4, "y": 3},
        "cohen_kappa": 0.25,
        "kappa_items": 3,
        "krippendorff_alpha": float("nan"),
        "position_bias": {"left_wins": 2, "decided": 3, "left_win_rate": 2 / 3},
        "judge": {"items": 2, "agreement": 0.5, "interval_95": [0.0, 1.0], "disagreements": [{}]},
    }
    assert stats_lines(stats) == [
        ("labels", "7 on 4 of 5 items"),
        ("labels by x", "4"),
        ("labels by y", "3"),
        ("Cohen's kappa (two annotators)", "0.250 on 3 items labelled by both"),
        ("Krippendorff's alpha (nominal)", "n/a"),
        ("position bias", "the left answer won 2 of 3 decided labels (67%; 50% is unbiased)"),
        ("judge vs people", "agreement 0.500 (95% bootstrap 0.000-1.000) on 2 items with a majority; 1 disagreements"),
    ]
    bare = {k: stats[k] for k in ("labels", "items", "items_labelled", "per_annotator", "krippendorff_alpha")}
    assert [label for label, _ in stats_lines(bare)] == [
        "labels",
        "labels by x",
        "labels by y",
        "Krippendorff's alpha (nominal)",
    ]


def test_majority_position_bias_and_judge_audit():
    labels = [
        {"annotator": "x", "item_id": "1", "choice": "a", "score": None, "shown_left": "a"},
        {"annotator": "y", "item_id": "1", "choice": "a", "score": None, "shown_left": "b"},
        {"annotator": "x", "item_id": "2", "choice": "b", "score": None, "shown_left": "b"},
        {
            "annotator": "y",
            "item_id": "2",
            "choice": "tie",
            "score": 4,
            "shown_left": "a",
        },  # a five-point 4 counts as b
        {"annotator": "x", "item_id": "3", "choice": "a", "score": None, "shown_left": "a"},
        {"annotator": "y", "item_id": "3", "choice": "b", "score": None, "shown_left": "a"},
    ]
    assert majority(labels[:2])[0] == "a" and majority(labels[2:4])[0] == "b" and majority(labels[4:])[0] is None
    items = [{"id": "1", "judge": "a"}, {"id": "2", "judge": "a"}, {"id": "3", "judge": "a"}]
    stats = label_stats(labels, items, ["x", "y"])
    assert stats["per_annotator"] == {"x": 3, "y": 3}
    assert stats["cohen_kappa"] == pytest.approx(cohen_kappa(["a", "b", "a"], ["a", "b", "b"]))
    # decided labels: the left answer won on x/1, x/2, x/3 and not on y/1, y/2, y/3
    assert stats["position_bias"] == {"left_wins": 3, "decided": 6, "left_win_rate": 0.5}
    # item 3 has no majority; the judge agrees on item 1 and not on item 2
    assert stats["judge"]["items"] == 2 and stats["judge"]["agreement"] == 0.5
    assert stats["judge"]["disagreements"] == [{"item_id": "2", "judge": "a", "people": "b", "votes": {"b": 2}}]
    assert all(math.isnan(bound) for bound in bootstrap_interval([]))  # no judged item: no interval
    assert bootstrap_interval([True] * 10) == (1.0, 1.0) and bootstrap_interval(
        [True, False] * 20, seed=3
    ) == bootstrap_interval([True, False] * 20, seed=3)


def write_rows(path, n=6, pairs=True):
    rows = [
        {
            "prompt": f"What is {i} + {i}?",
            **(
                {"chosen": str(2 * i), "rejected": f"It is {2 * i + 1}."}
                if pairs
                else {"response_a": str(2 * i), "response_b": f"It is {2 * i + 1}."}
            ),
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tokens_from(capsys) -> list[str]:
    return [
        line.split()[-1] for line in capsys.readouterr().out.splitlines() if "token" in line and "?token=" not in line
    ]


@pytest.fixture
def project(tmp_path, capsys):
    root = tmp_path / "proj"
    assert (
        main(["label", "init", str(root), "--rows", str(write_rows(tmp_path / "pairs.jsonl")), "--overlap", "2"]) == 0
    )
    admin = tokens_from(capsys)[0]
    assert main(["label", "add-annotator", str(root), "alice"]) == 0
    alice = tokens_from(capsys)[0]
    assert main(["label", "add-annotator", str(root), "bob"]) == 0
    bob = tokens_from(capsys)[0]
    assert (
        main(["label", "add-annotator", str(root), "carol"]) == 0
    )  # overlap 2: alice and bob already cover every item
    carol = tokens_from(capsys)[0]
    return root, {"admin": admin, "alice": alice, "bob": bob, "carol": carol}


def test_blind_labels_unblinded_on_the_server_once_each(project):
    root, tokens = project
    client = TestClient(create_app(root))
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    state = client.get("/api/state", headers=alice).json()
    assert state["total"] == 6 and state["done"] == 0 and len(state["items"]) == 2  # the next item is prefetched
    first = state["items"][0]
    assert set(first) == {"item_id", "prompt", "left", "right"}  # no response_a/b, no key
    left = shown_left(0, "alice", first["item_id"])
    assert (
        client.post(
            "/api/label", headers=alice, json={"item_id": first["item_id"], "choice": "1", "reason": "right sum"}
        ).status_code
        == 200
    )
    assert (
        client.post("/api/label", headers=alice, json={"item_id": first["item_id"], "choice": "1"}).status_code == 200
    )  # a retry
    rows = (
        sqlite3.connect(root / "labels.sqlite")
        .execute("SELECT annotator, item_id, choice, shown_left FROM labels")
        .fetchall()
    )
    assert rows == [("alice", first["item_id"], left, left)]  # once, and "1" (the left answer) unblinded to a or b
    assert client.get("/api/state", headers=alice).json()["done"] == 1
    assert client.post("/api/undo", headers=alice, json={}).json() == {"item_id": first["item_id"]}
    assert client.get("/api/state", headers=alice).json()["items"][0]["item_id"] == first["item_id"]


def test_refusals(project, capsys):
    root, tokens = project
    client = TestClient(create_app(root))
    item = client.get("/api/state", headers={"Authorization": f"Bearer {tokens['alice']}"}).json()["items"][0][
        "item_id"
    ]
    assert client.get("/api/state", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/label", json={"item_id": item, "choice": "1"}).status_code == 401
    carol = {"Authorization": f"Bearer {tokens['carol']}"}
    assert client.get("/api/state", headers=carol).json()["total"] == 0
    assert client.post("/api/label", headers=carol, json={"item_id": item, "choice": "1"}).status_code == 403
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    for body in (
        {"item_id": item, "choice": "maybe"},
        {"item_id": item},
        {"item_id": item, "choice": "1", "extra": 1},
        {"item_id": item, "score": 4},
    ):
        assert client.post("/api/label", headers=alice, json=body).status_code == 422, body
    assert client.get("/api/stats", headers=alice).status_code == 403  # the stats are the admin's
    assert client.get("/stats").status_code == 401
    assert sqlite3.connect(root / "labels.sqlite").execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 0
    assert main(["label", "add-annotator", str(root), "alice"]) == 2  # a name already taken: her token stays
    assert "annotator 'alice' already exists" in capsys.readouterr().err
    assert client.get("/api/state", headers=alice).status_code == 200


def test_stats_and_export(project, tmp_path, capsys):
    root, tokens = project
    client = TestClient(create_app(root))
    for name, prefer in (("alice", "a"), ("bob", "b")):
        headers = {"Authorization": f"Bearer {tokens[name]}"}
        while items := client.get("/api/state", headers=headers).json()["items"]:
            item = items[0]["item_id"]
            wanted = prefer if int(item) < 5 else "a"  # they disagree on items 1-4 and agree on 5-6
            choice = "1" if shown_left(0, name, item) == wanted else "2"
            assert (
                client.post("/api/label", headers=headers, json={"item_id": item, "choice": choice}).status_code == 200
            )
    stats = client.get("/api/stats", headers={"Authorization": f"Bearer {tokens['admin']}"}).json()
    assert stats["per_annotator"] == {"alice": 6, "bob": 6, "carol": 0}
    # alice: a x6; bob: b x4, a x2 -> p_o = 2/6, p_e = (6*2)/36 = 1/3 -> kappa 0
    assert stats["cohen_kappa"] == pytest.approx(0.0)
    assert stats["judge"] == {
        "items": 2,
        "agreement": 1.0,
        "interval_95": [1.0, 1.0],
        "disagreements": [],
    }  # items 1-4 have no majority
    page = client.get(f"/stats?token={tokens['admin']}").text
    assert "Cohen&#x27;s kappa (two annotators)</th><td>0.000 on 6 items" in page
    out = tmp_path / "labelled.jsonl"
    assert main(["label", "export", str(root), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("What is 4 + 4?", "8", "It is 9."),
        ("What is 5 + 5?", "10", "It is 11."),
    ]
    assert rows[0]["provenance"] == {
        "source": "label:proj",
        "item_id": "5",
        "annotators": ["alice", "bob"],
        "votes": {"a": 2},
        "agreement": 1.0,
    }
    assert main(["label", "export", str(root), "--output", str(out)]) == 2  # never overwritten unless asked
    assert main(["label", "stats", str(root)]) == 0
    assert "judge vs people" in capsys.readouterr().out


def test_a_bad_input_row_names_file_and_line_and_writes_nothing(tmp_path, capsys):
    rows = write_rows(tmp_path / "rows.jsonl", pairs=False)
    lines = rows.read_text().splitlines()
    lines[2] = json.dumps({"prompt": "x", "response_a": "y"})
    rows.write_text("\n".join(lines) + "\n")
    assert main(["label", "init", str(tmp_path / "p"), "--rows", str(rows)]) == 2
    assert f"{rows}:3: missing or empty field 'response_b'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_projects_items_file_edited_by_hand_is_checked_line_by_line(tmp_path):
    from alignkit.commands.label.project import read_items
    from alignkit.errors import ConfigError

    path = tmp_path / "items.jsonl"
    good = {"id": "1", "prompt": "p", "response": "r"}

    def items(*lines):
        path.write_text("\n".join(lines) + "\n")
        return read_items(path, "thumbs")

    assert items(json.dumps(good), "", "   ", json.dumps(dict(good, id="2"))) == [good, dict(good, id="2")]
    refusals = [
        (
            (json.dumps(good), "", json.dumps({"id": "2", "prompt": "p"})),
            f"{path}:3: missing or empty field 'response'",
        ),
        ((json.dumps(dict(good, id=" ")),), f"{path}:1: missing or empty field 'id' (a thumbs item needs id, prompt"),
        ((json.dumps(dict(good, id=2)),), f"{path}:1: missing or empty field 'id'"),  # ids are text
        ((json.dumps(good), json.dumps(good)), f"{path}:2: duplicate id '1'"),
        ((json.dumps(good), "{not json"), f"{path}:2: invalid JSON"),
        (("", " "), f"{path}: no items"),
    ]
    for lines, message in refusals:
        with pytest.raises(ConfigError) as caught:
            items(*lines)
        assert str(caught.value).startswith(message), str(caught.value)

    # project.yaml: defaults for what is left out, a misspelt key and an overlap below 1 refused by name
    from alignkit.commands.label.project import load_project

    (tmp_path / "items.jsonl").write_text(json.dumps(dict(good, response_a="a", response_b="b")) + "\n")
    (tmp_path / "project.yaml").write_text("name: audit\n")
    _, project, _ = load_project(tmp_path)
    assert (project.kind, project.scale, project.overlap, project.seed, project.reasons) == (
        "compare",
        "tie",
        1,
        0,
        True,
    )
    for text, message in (("name: a\noverlapp: 2\n", "overlapp: Extra inputs"), ("name: a\noverlap: 0\n", "overlap: ")):
        (tmp_path / "project.yaml").write_text(text)
        with pytest.raises(ConfigError, match=f"project.yaml: {message}"):
            load_project(tmp_path)


def test_input_rows_keep_a_known_judge_label_and_each_side_is_shown_left_about_half_the_time():
    from alignkit.commands.label.project import items_from_rows

    rows = [
        {"prompt": "p", "response_a": "x", "response_b": "y", "judge": "b"},
        {"prompt": "p", "response_a": "x", "response_b": "y", "judge": "maybe"},  # not a label: dropped
        {"id": "c", "prompt": "p", "chosen": "x", "rejected": "y"},  # a judge's pair: the judge chose a
    ]
    items = items_from_rows(rows, "compare", "rows.jsonl")
    assert [(i["id"], i.get("judge")) for i in items] == [("1", "b"), ("2", None), ("c", "a")]
    assert items[2]["response_a"] == "x" and items[2]["response_b"] == "y"
    sides = [shown_left(0, "alice", str(i)) for i in range(400)]
    assert set(sides) == {"a", "b"} and 160 <= sides.count("a") <= 240  # a fair coin: 200 +- 2 sd of 10
    assert sides == [shown_left(0, "alice", str(i)) for i in range(400)]  # the same every time
    assert sides != [shown_left(0, "bob", str(i)) for i in range(400)]  # each annotator their own


def test_export_counts_every_item_and_writes_pairs_ties_and_kto_rows(tmp_path):
    from alignkit.commands.label.project import LabelProject
    from alignkit.commands.label.report import export_labels
    from alignkit.errors import RunDirError

    items = [{"id": str(i), "prompt": f"p{i}", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(1, 5)]
    votes = {"1": ("b", "b"), "2": ("tie", "tie"), "3": ("a", "b")}  # item 4 has no label
    labels = [
        {"annotator": who, "item_id": item, "choice": choice, "score": None}
        for item, choices in votes.items()
        for who, choice in zip(("x", "y"), choices)
    ]
    out = tmp_path / "pairs.jsonl"
    counts = export_labels(LabelProject(name="t"), items, labels, out, ties="keep")
    assert counts == {"items": 4, "labelled": 3, "written": 1, "ties": 1, "no_majority": 1}
    [pair] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == ("p1", "b1", "a1")
    assert pair["provenance"] == {
        "source": "label:t",
        "item_id": "1",
        "annotators": ["x", "y"],
        "votes": {"b": 2},
        "agreement": 1.0,
    }
    [tie] = [json.loads(line) for line in out.with_suffix(".ties.jsonl").read_text().splitlines()]
    assert (tie["prompt"], tie["response_a"]) == ("p2", "a2")
    with pytest.raises(RunDirError, match="exists; pass --overwrite"):
        export_labels(LabelProject(name="t"), items, labels, out)
    thumbs = [{"id": "1", "prompt": "p", "response": "r"}, {"id": "2", "prompt": "q", "response": "s"}]
    marks = [{"annotator": "x", "item_id": "1", "choice": "up"}, {"annotator": "x", "item_id": "2", "choice": "down"}]
    kto = tmp_path / "kto.jsonl"
    assert export_labels(LabelProject(name="t", kind="thumbs"), thumbs, marks, kto)["written"] == 2
    assert [json.loads(line)["label"] for line in kto.read_text().splitlines()] == [True, False]


def test_thumbs_export_kto_rows_and_review_export_the_sheet(tmp_path, capsys):
    rows = tmp_path / "completions.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) + "\n" for i in range(3)))
    root = tmp_path / "thumbs"
    assert main(["label", "init", str(root), "--rows", str(rows), "--kind", "thumbs"]) == 0
    assert main(["label", "add-annotator", str(root), "ann"]) == 0
    token = tokens_from(capsys)[-1]
    client = TestClient(create_app(root))
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        client.post("/api/label", headers=headers, json={"item_id": "1", "choice": "1"}).status_code == 422
    )  # thumbs take up/down
    for item, vote in (("1", "up"), ("2", "down")):
        assert client.post("/api/label", headers=headers, json={"item_id": item, "choice": vote}).status_code == 200
    out = tmp_path / "kto.jsonl"
    assert main(["label", "export", str(root), "--output", str(out)]) == 0
    assert [(r["prompt"], r["completion"], r["label"]) for r in map(json.loads, out.read_text().splitlines())] == [
        ("p0", "c0", True),
        ("p1", "c1", False),
    ]

    review = tmp_path / "review"
    source = tmp_path / "answers.jsonl"
    source.write_text(json.dumps({"prompt": "2+2?", "reference": "Let me think... 5", "model": "4"}) + "\n")
    assert main(["label", "init", str(review), "--rows", str(source), "--kind", "review"]) == 0
    assert main(["label", "add-annotator", str(review), "ann"]) == 0
    token = tokens_from(capsys)[-1]
    client = TestClient(create_app(review))
    state = client.get("/api/state", headers={"Authorization": f"Bearer {token}"}).json()
    assert (
        state["items"][0]["reference"] == "Let me think... 5" and state["items"][0]["model"] == "4"
    )  # named, side by side
    client.post(
        "/api/label",
        headers={"Authorization": f"Bearer {token}"},
        json={"item_id": "1", "choice": "pass", "reason": "short and right"},
    )
    sheet = tmp_path / "sheet.md"
    assert main(["label", "export", str(review), "--output", str(sheet)]) == 0
    assert "| 1 | 2+2? | Let me think... 5 | 4 | pass |" in sheet.read_text() and sheet.with_suffix(".html").is_file()


def test_answers_generated_by_two_models_and_a_five_point_scale(tmp_path, tiny_model_dir, tiny_tokenizer, capsys):
    import shutil

    from conftest import build_model, write_prompts

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    build_model(len(tiny_tokenizer), seed=1).save_pretrained(other)  # another model, same tokenizer
    root = tmp_path / "gen"
    assert (
        main(
            [
                "label",
                "init",
                str(root),
                "--prompts",
                str(write_prompts(tmp_path / "prompts.jsonl", 3)),
                "--model_a",
                str(tiny_model_dir),
                "--model_b",
                str(other),
                "--max_new_tokens",
                "4",
                "--scale",
                "five",
            ]
        )
        == 0
    )
    items = [json.loads(line) for line in (root / "items.jsonl").read_text().splitlines()]
    assert [i["prompt"] for i in items] == ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"] and all(
        i["response_a"] and i["response_b"] for i in items
    )
    assert main(["label", "add-annotator", str(root), "ann"]) == 0
    token = tokens_from(capsys)[-1]
    client = TestClient(create_app(root))
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        client.post("/api/label", headers=headers, json={"item_id": "1", "choice": "1"}).status_code == 422
    )  # this project takes scores
    assert (
        client.post("/api/label", headers=headers, json={"item_id": "1", "score": 2}).status_code == 200
    )  # "left better", as shown
    ((score, choice),) = sqlite3.connect(root / "labels.sqlite").execute("SELECT score, choice FROM labels").fetchall()
    assert (score, choice) == (
        (2, "a") if shown_left(0, "ann", "1") == "a" else (4, "b")
    )  # stored unblinded: 1 = a much better


def test_a_late_retry_keeps_its_place_and_undo_takes_the_newest_label(tmp_path):
    from alignkit.commands.label.store import LabelStore

    store = LabelStore(tmp_path / "labels.sqlite")
    assert store.put_label("al", "X", "a", None, "", "a", request_id="r1") == "stored"
    assert store.put_label("al", "Y", "b", None, "", "a", request_id="r2") == "stored"
    assert store.put_label("al", "X", "a", None, "", "a", request_id="r1") == "retry"  # X's request, late
    assert store.undo("al") == "Y"  # the newest label given; a retry did not make X newer
    assert [(r["item_id"], r["choice"]) for r in store.all_labels()] == [("X", "a")]
    assert store.put_label("al", "Y", "b", None, "", "a", request_id="r2") == "undone"  # a retry after the undo
    assert [(r["item_id"], r["choice"]) for r in store.all_labels()] == [("X", "a")]


def test_undo_of_a_changed_label_restores_what_it_replaced(tmp_path):
    from alignkit.commands.label.store import LabelStore

    store = LabelStore(tmp_path / "labels.sqlite")
    store.put_label("al", "X", "a", None, "first", "a", request_id="r1")
    store.put_label("al", "Y", "b", None, "", "a", request_id="r2")
    assert store.put_label("al", "X", "tie", None, "changed my mind", "a", request_id="r3") == "stored"
    current = {r["item_id"]: (r["choice"], r["reason"]) for r in store.all_labels()}
    assert current == {"X": ("tie", "changed my mind"), "Y": ("b", "")}
    assert store.undo("al") == "X"  # the change was the newest label: X goes back to its first choice
    current = {r["item_id"]: (r["choice"], r["reason"]) for r in store.all_labels()}
    assert current == {"X": ("a", "first"), "Y": ("b", "")}
    assert store.undo("al") == "Y" and store.undo("al") == "X" and store.undo("al") is None
    assert store.put_label("al", "X", "tie", None, "", "a", request_id="r3") == "undone"


def test_retries_through_the_api_keep_their_place(project):
    root, tokens = project
    client = TestClient(create_app(root))
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    first, second = client.get("/api/state", headers=alice).json()["items"][:2]
    label = lambda item, request: client.post(  # noqa: E731
        "/api/label", headers=alice, json={"item_id": item["item_id"], "choice": "1", "request_id": request}
    ).json()["outcome"]
    assert (label(first, "p1"), label(second, "p2"), label(first, "p1")) == ("stored", "stored", "retry")
    assert client.post("/api/undo", headers=alice, json={}).json() == {"item_id": second["item_id"]}
    assert label(second, "p2") == "undone"


def test_overwrite_replaces_a_labelling_project_and_nothing_else(tmp_path, capsys):
    rows = write_rows(tmp_path / "rows.jsonl")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    assert main(["label", "init", str(notes), "--rows", str(rows), "--overwrite"]) == 2
    assert "holds no labelling project (todo.txt)" in capsys.readouterr().err
    assert (notes / "todo.txt").read_text() == "mine"
    assert main(["label", "init", str(tmp_path / "p"), "--rows", str(rows)]) == 0
    assert main(["label", "init", str(tmp_path / "p"), "--rows", str(write_rows(rows, n=3)), "--overwrite"]) == 0
    assert len((tmp_path / "p" / "items.jsonl").read_text().splitlines()) == 3
