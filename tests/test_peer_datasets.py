"""Other tools' datasets read as they are: LLaMA-Factory's alpaca and sharegpt rows (SFT, pairs, KTO,
prompts) as its data/README.md shows them, names looked up in a dataset_info.json, and torchtune's
dataset builders with their column maps."""

import json

import pytest

from alignkit.configs import DPOConfig, KTOConfig, SFTConfig, load_config
from alignkit.data.kto import load_kto_data
from alignkit.data.methods import data_loader
from alignkit.data.preference import load_preference_data
from alignkit.data.prompts import load_prompt_rows
from alignkit.data.records import load_train_eval
from alignkit.data.sft import load_sft_data
from alignkit.errors import ConfigError, DataValidationError

SYSTEM = {"role": "system", "content": "Be brief."}


def write_rows(path, rows):
    """JSONL, or a JSON array (LLaMA-Factory's usual file) for a .json path."""
    text = json.dumps(rows) if path.suffix == ".json" else "".join(json.dumps(row) + "\n" for row in rows)
    path.write_text(text)
    return str(path)


def test_alpaca_rows_join_instruction_and_input_after_system_and_history(tmp_path):
    pairs = write_rows(
        tmp_path / "pairs.jsonl",
        [
            {"instruction": "Add", "input": "2 and 3", "chosen": "5", "rejected": "6", "system": "Be brief."},
            {"instruction": "Name a colour", "input": "", "output": ["red", "loud"]},  # the older pairs: output [a, b]
        ],
    )
    first, second = load_preference_data(pairs)
    assert (first.prompt, first.chosen, first.rejected) == (
        [SYSTEM, {"role": "user", "content": "Add\n2 and 3"}],  # LLaMA-Factory's "instruction\ninput"
        "5",
        "6",
    )
    assert (second.prompt, second.chosen, second.rejected) == (
        [{"role": "user", "content": "Name a colour"}],
        "red",
        "loud",
    )

    sft = write_rows(
        tmp_path / "sft.jsonl",
        [{"instruction": "And 4?", "output": "7", "history": [["Add 2 and 3", "5"]]}],
    )
    (example,) = load_sft_data(sft)
    assert example.messages == [  # the history's answer is trained on too, as in LLaMA-Factory
        {"role": "user", "content": "Add 2 and 3"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "And 4?"},
        {"role": "assistant", "content": "7"},
    ]
    assert [row["prompt"] for row in load_prompt_rows(sft)] == [example.messages[:3]]  # RL reads the prompt

    kto = write_rows(
        tmp_path / "kto.jsonl",
        [
            {"instruction": "Add 2 and 3", "output": "5", "kto_tag": True},
            {"instruction": "Hi", "output": "Go away", "kto_tag": False},
        ],
    )
    assert [(e.prompt[-1]["content"], e.completion, e.desirable) for e in load_kto_data(kto)] == [
        ("Add 2 and 3", "5", True),
        ("Hi", "Go away", False),
    ]


def test_sharegpt_rows_become_conversations_pairs_and_kto_rows(tmp_path):
    turn = [{"from": "human", "value": "Add 2 and 3"}]
    source = write_rows(
        tmp_path / "pairs.json",
        [
            {
                "conversations": [{"from": "system", "value": "Be brief."}, *turn],
                "chosen": {"from": "gpt", "value": "5"},
                "rejected": {"from": "gpt", "value": "6"},
            }
        ],
    )
    (pair,) = load_preference_data(source)
    assert (pair.prompt, pair.chosen, pair.rejected) == ([SYSTEM, {"role": "user", "content": "Add 2 and 3"}], "5", "6")

    chat = [
        *turn,
        {"from": "gpt", "value": "5"},
        {"from": "human", "value": "Weather?"},
        {"from": "function_call", "value": "{}"},
    ]
    chat += [{"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]
    sft = write_rows(tmp_path / "sft.jsonl", [{"conversations": chat, "system": "Be brief."}])
    (example,) = load_sft_data(sft)
    assert [m["role"] for m in example.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert example.messages[0] == SYSTEM and example.messages[-1]["content"] == "Sunny."

    kto = write_rows(
        tmp_path / "kto.jsonl", [{"conversations": [*turn, {"from": "gpt", "value": "6"}], "kto_tag": False}]
    )
    (row,) = load_kto_data(kto)
    assert (row.prompt, row.completion, row.desirable) == ([{"role": "user", "content": "Add 2 and 3"}], "6", False)


def test_broken_llama_factory_rows_are_reported_with_line_and_field(tmp_path):
    source = write_rows(
        tmp_path / "bad.jsonl",
        [
            {"instruction": "Add", "history": [["only a question"]], "output": "5"},
            {"conversations": [{"from": "narrator", "value": "Once"}, {"from": "gpt", "value": "upon"}]},
            {"conversations": [{"from": "human", "value": "Hi"}], "kto_tag": True},
            {"instruction": "", "input": "", "output": "5"},
            {"instruction": "Add", "output": "5", "kto_tag": "yes"},
        ],
    )
    with pytest.raises(DataValidationError) as caught:
        load_sft_data(source)
    text = str(caught.value)
    assert f"{source}:1" in text and "history" in text and "[instruction, response] pairs" in text
    assert f"{source}:2" in text and "conversations[0].from" in text and "'narrator'" in text
    assert f"{source}:3" in text and "must end with the assistant's answer" in text
    assert f"{source}:4" in text and "instruction" in text
    assert f"{source}:5: field 'kto_tag': expected true or false, got 'yes'" in text


def test_alignkits_own_rows_are_left_as_they_are(tmp_path):
    """A row with alignkit's prompt (or messages) keeps its meaning, whatever else it carries."""
    source = write_rows(tmp_path / "own.jsonl", [{"prompt": "Add", "chosen": "5", "rejected": "6", "instruction": "x"}])
    (pair,) = load_preference_data(source)
    assert (pair.prompt, pair.chosen) == ("Add", "5")


def test_a_dataset_named_in_dataset_info_json_is_read_with_its_columns(tmp_path, monkeypatch):
    """LLaMA-Factory's ``dataset: name`` + ``dataset_dir``, its entry's file and columns (the README's
    alpaca preference entry, renamed columns), and the OpenAI form's tags."""
    data = tmp_path / "data"
    data.mkdir()
    write_rows(data / "mine.jsonl", [{"question": "Add 2 and 3", "good": "5", "bad": "6"}])
    write_rows(
        data / "chats.jsonl",
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}],
    )
    info = {
        "my_pairs": {
            "file_name": "mine.jsonl",
            "ranking": True,
            "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"},
        },
        "chats": {
            "file_name": "chats.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        },
        "odd_tags": {"file_name": "chats.jsonl", "formatting": "sharegpt", "tags": {"user_tag": "person"}},
        "on_hub": {"hf_hub_url": "someone/pairs", "ranking": True},
        "their_pairs": {"file_name": "theirs.jsonl", "ranking": True, "columns": {"prompt": "query"}},
    }
    (data / "dataset_info.json").write_text(json.dumps(info))
    config = load_config(DPOConfig, overrides=["--stage", "dpo", "--dataset", "my_pairs", "--dataset_dir", str(data)])
    assert config.train_data == str(data / "mine.jsonl")
    assert config.data_fields == {"instruction": "question", "chosen": "good", "rejected": "bad"}
    (pair,) = load_preference_data(config.train_data, fields=config.data_fields)
    assert (pair.prompt, pair.chosen, pair.rejected) == ([{"role": "user", "content": "Add 2 and 3"}], "5", "6")

    monkeypatch.chdir(tmp_path)  # dataset_dir unset: LLaMA-Factory's default, data
    sft = load_config(SFTConfig, overrides=["--stage", "sft", "--dataset", "chats", "--eval_dataset", "chats"])
    assert (sft.train_data, sft.eval_data, sft.data_fields) == (
        "data/chats.jsonl",
        "data/chats.jsonl",
        {"conversations": "messages"},
    )
    (chat,) = load_sft_data(sft.train_data, fields=sft.data_fields)
    assert chat.messages[-1] == {"role": "assistant", "content": "Hello"}
    assert load_config(DPOConfig, overrides=["--dataset", "on_hub"]).train_data == "someone/pairs"
    assert load_config(DPOConfig, overrides=["--dataset", "x.jsonl", "--train_data", "y.jsonl"]).train_data == "y.jsonl"

    with pytest.raises(ConfigError, match=r"'odd_tags'.*tags.user_tag 'person'"):
        load_config(SFTConfig, overrides=["--dataset", "odd_tags"])
    with pytest.raises(ConfigError, match=r"dataset 'nope': not in .*dataset_info.json \(it names: chats, my_pairs"):
        load_config(KTOConfig, overrides=["--dataset", "nope", "--dataset_dir", "data"])
    with pytest.raises(ConfigError, match="'their_pairs': its columns differ from another dataset's"):
        load_config(DPOConfig, overrides=["--dataset", "my_pairs,their_pairs", "--dataset_dir", "data"])


def test_the_tags_a_dataset_info_entry_may_name_are_the_ones_rows_are_read_with():
    from alignkit.data.llamafactory import MESSAGE_KEYS, ROLE_NAMES
    from alignkit.peer_names.llamafactory_datasets import DEFAULT_TAGS

    roles = {
        value for tag, values in DEFAULT_TAGS.items() if tag not in ("role_tag", "content_tag") for value in values
    }
    assert roles == set(ROLE_NAMES)
    assert (DEFAULT_TAGS["role_tag"], DEFAULT_TAGS["content_tag"]) == tuple(set(keys) for keys in zip(*MESSAGE_KEYS))


def test_torchtune_dataset_builders_read_the_rows_they_build(tmp_path, capsys):
    chats = write_rows(
        tmp_path / "chats.jsonl", [{"dialogue": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    )
    qa = write_rows(tmp_path / "qa.jsonl", [{"question": "Add 2 and 3", "answer": "5"}])
    section = "dataset._component_=torchtune.datasets.{}"

    chat = load_config(
        SFTConfig,
        overrides=[section.format("chat_dataset"), "dataset.source=json", f"dataset.data_files={chats}"]
        + ["dataset.conversation_column=dialogue", "dataset.conversation_style=sharegpt"],
    )
    assert (chat.train_data, chat.data_fields) == (chats, {"conversations": "dialogue"})
    (example,) = load_sft_data(chat.train_data, fields=chat.data_fields)
    assert example.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]

    # instruct_dataset reads input/output; its column_map names yours, whichever comes first in the file
    instruct = load_config(
        SFTConfig,
        overrides=["dataset.column_map={input: question, output: answer}", section.format("instruct_dataset")]
        + [f"dataset.data_files={qa}"],
    )
    assert instruct.data_fields == {"prompt": "question", "completion": "answer"}
    (row,) = load_sft_data(instruct.train_data, fields=instruct.data_fields)
    assert (row.prompt, row.completion) == ("Add 2 and 3", "5")
    plain = load_config(SFTConfig, overrides=[section.format("instruct_dataset"), f"dataset.data_files={qa}"])
    assert plain.data_fields == {"prompt": "input", "completion": "output"}

    hh = load_config(DPOConfig, overrides=[section.format("hh_rlhf_helpful_dataset")])
    assert (hh.train_data, hh.data_fields) == ("RLHFlow/HH-RLHF-Helpful-standard", {})
    stack = load_config(DPOConfig, overrides=[section.format("stack_exchange_paired_dataset")])
    assert (stack.train_data, stack.data_fields) == (  # torchtune's DPO recipes' default: its data/rl folder
        "lvwerra/stack-exchange-paired/data/rl",
        {"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
    )
    with pytest.raises(ConfigError, match="the_cauldron_dataset: alignkit reads torchtune's preference_dataset"):
        load_config(DPOConfig, overrides=[section.format("multimodal.the_cauldron_dataset")])
    with pytest.raises(ConfigError, match="'dataset.train_on_input' \\(torchtune\\).*the prompt is masked"):
        load_config(DPOConfig, overrides=[section.format("preference_dataset"), "dataset.train_on_input=true"])


def test_llama_factory_dataset_lists_are_read_one_after_another_and_pt_reads_text(tmp_path, monkeypatch):
    """LLaMA-Factory's SFT examples name two datasets (``identity,alpaca_en_demo``), read one after the
    other; a pre-training set (stage ``pt``: ``alignkit sft``) is read from its prompt column as text."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    write_rows(data / "identity.json", [{"instruction": "Who are you?", "output": "A helper."}] * 2)
    write_rows(data / "alpaca.json", [{"instruction": "Add", "input": "2 and 3", "output": "5"}])
    write_rows(data / "c4.jsonl", [{"text": "Plain text to continue."}])
    info = {"identity": {"file_name": "identity.json"}, "alpaca": {"file_name": "alpaca.json"}}
    info["c4"] = {"file_name": "c4.jsonl", "columns": {"prompt": "text"}}
    (data / "dataset_info.json").write_text(json.dumps(info))

    config = load_config(SFTConfig, overrides=["--stage", "sft", "--dataset", "identity, alpaca", "--max_samples", "1"])
    assert config.train_data == "data/identity.json,data/alpaca.json"
    rows = load_sft_data(config.train_data)
    assert [e.where for e in rows] == ["data/identity.json row 1", "data/identity.json row 2", "data/alpaca.json row 1"]
    (first, second), _ = load_train_eval(config.model_copy(update={"eval_split": 0.0}), data_loader("sft"))
    assert [(e.where, e.messages[0]["content"]) for e in (first, second)] == [  # max_samples: of each dataset
        ("data/identity.json row 1", "Who are you?"),
        ("data/alpaca.json row 1", "Add\n2 and 3"),
    ]
    pretrain = load_config(SFTConfig, overrides=["--stage", "pt", "--dataset", "c4"])
    assert (pretrain.train_data, pretrain.data_fields) == ("data/c4.jsonl", {})
    (text,) = load_sft_data(pretrain.train_data, fields=pretrain.data_fields)
    assert (text.prompt, text.completion) == (None, "Plain text to continue.")
