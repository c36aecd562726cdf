"""The CLI: help, exit status 2 on bad input, nothing written when input is bad."""

import json

import pytest

from alignkit.cli import main


def test_help_lists_commands_and_keys(capsys):
    assert main(["--help"]) == 0
    assert "dpo" in capsys.readouterr().out
    assert main(["dpo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--beta" in out and "--per_device_train_batch_size" in out


def test_unknown_command_exits_2(capsys):
    assert main(["dpoo"]) == 2
    assert "unknown command 'dpoo'" in capsys.readouterr().err


def test_bad_data_exits_2_names_line_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": ""})
        + "\n"
    )
    out_dir = tmp_path / "run"
    assert main(["dpo", "--train_data", str(data), "--output_dir", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: field 'chosen': empty text" in err
    assert f"{data}:2: field 'rejected': missing" in err
    assert not out_dir.exists()


def test_a_missing_local_model_is_named_not_looked_up_on_the_hub(tmp_path, capsys, monkeypatch):
    from alignkit.models.loading import resolve_model_path

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "run"
    assert main(["dpo", "--model", "./my-sft", "--train_data", str(data), "--output_dir", str(out_dir)]) == 1
    assert (
        f"model not found: ./my-sft (no such folder under {tmp_path}; a hub id is owner/name)"
        in capsys.readouterr().err
    )
    assert not out_dir.exists()
    for name in ("/no/such/model", "~/no-such-model", "runs/dpo/final"):
        with pytest.raises(Exception, match=f"model not found: {name} "):
            resolve_model_path(name)
    assert resolve_model_path("owner/name") == "owner/name"  # a hub id: for transformers to look up
    for step in (2, 10):  # a run stopped before final/: its newest checkpoint by number, not by name
        (tmp_path / "stopped" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "stopped" / f"checkpoint-{step}" / "trainable.safetensors").write_bytes(b"")
    with pytest.raises(Exception, match="has no final/ model .*--model stopped/checkpoint-10, or .*--resume true"):
        resolve_model_path("stopped")


def test_bad_config_exits_2(tmp_path, capsys):
    assert main(["dpo", "--train_data", "x.jsonl", "--learning_rate", "-3"]) == 2
    assert "learning_rate = -3 (command line)" in capsys.readouterr().err


def test_every_public_name_of_the_python_api_resolves():
    import alignkit

    missing = [name for name in alignkit.__all__ if getattr(alignkit, name, None) is None]
    assert not missing


@pytest.mark.parametrize("command", ["sft", "reward", "score", "kto", "orpo"])
def test_method_commands_are_listed_and_have_help(command, capsys):
    assert main(["--help"]) == 0
    assert f"  {command} " in capsys.readouterr().out
    assert main([command, "--help"]) == 0
    assert "--learning_rate" in capsys.readouterr().out or command == "score"


@pytest.mark.parametrize("command,key", [("pairs", "--method"), ("annotate", "--mode"), ("serve", "--host")])
def test_data_commands_are_listed_and_have_help(command, key, capsys):
    assert main(["--help"]) == 0
    assert f"  {command} " in capsys.readouterr().out
    assert main([command, "--help"]) == 0
    assert key in capsys.readouterr().out


def test_trls_launch_options_relaunch_the_command_under_accelerate(tmp_path, capsys):
    """``trl dpo ... --num_processes 4`` / ``--accelerate_config zero3`` (TRL's CLI page): the same command
    under ``accelerate launch``; one process runs here; a launched process does not launch again."""
    import sys

    from alignkit.commands.launch import SHIPPED, plan_launch

    launch, rest = plan_launch("dpo", ["c.yaml", "--num_processes", "4", "--beta", "0.2"], {})
    assert launch == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "4", "--multi_gpu"] + [
        "-m",
        "alignkit",
        "dpo",
        "c.yaml",
        "--beta",
        "0.2",
    ]
    assert rest == ["c.yaml", "--beta", "0.2"]
    launch, _ = plan_launch("sft", ["--accelerate_config", "zero3", "--num_processes=2", "--model", "m"], {})
    assert launch[3:9] == ["--num_processes", "2", "--config_file", str(SHIPPED / "zero3.yaml"), "-m", "alignkit"]
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\n")
    assert plan_launch("kto", ["--accelerate_config", str(own)], {})[0][3:5] == ["--config_file", str(own)]
    assert plan_launch("dpo", ["--num_processes", "1", "--beta", "0.2"], {}) == (None, ["--beta", "0.2"])
    assert plan_launch("dpo", ["--accelerate_config", "single_gpu"], {}) == (None, [])
    assert plan_launch("dpo", ["--num_processes", "4", "--beta", "0.2"], {"LOCAL_RANK": "0"}) == (
        None,
        ["--beta", "0.2"],
    )
    # TRL's CLI page sets them in the YAML config too; the command line's win
    config = tmp_path / "dpo.yaml"
    config.write_text("model_name_or_path: m\nnum_processes: 4\naccelerate_config: zero3\n")
    launch, rest = plan_launch("dpo", [str(config), "--num_processes", "2"], {}, str(config))
    assert launch[3:7] == ["--num_processes", "2", "--config_file", str(SHIPPED / "zero3.yaml")] and rest == [
        str(config)
    ]
    assert main(["dpo", "--accelerate_config", "zero1"]) == 2
    assert "zero1: ZeRO-1 is not shipped" in capsys.readouterr().err
