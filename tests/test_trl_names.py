"""TRL's names on the command line and in YAML: mapped, noticed, refused with advice, suggested."""

import json

import pytest
import torch

from alignkit.configs import DPOConfig, SFTConfig, load_config
from alignkit.errors import AlignkitError, ConfigError


def test_trl_command_line_maps_to_alignkit(capsys):
    config = load_config(
        DPOConfig,
        None,
        [
            "--model_name_or_path",
            "some/model",
            "--dataset_name",
            "pairs.jsonl",
            "--max_length",
            "512",
            "--bf16",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
            "--eval_strategy",
            "no",
            "--torch_dtype",
            "bfloat16",
            "--warmup_steps",
            "5",
            "--loss_type",
            "ipo",
            "--remove_unused_columns",
            "false",
            "--overwrite_output_dir",
            "--report_to",
            "none",
        ],
    )
    assert (config.model, config.train_data, config.max_length, config.max_prompt_length) == (
        "some/model",
        "pairs.jsonl",
        512,
        None,
    )
    assert (config.mixed_precision, config.dtype, config.warmup_steps, config.loss_type) == (
        "bf16",
        "bfloat16",
        5,
        "ipo",
    )
    assert config.lora_target_modules == ["q_proj", "v_proj"]  # TRL's space-separated list
    assert config.eval_split == 0.0 and config.overwrite is True and config.report_to == ["none"]
    assert "'remove_unused_columns' (TRL/transformers) has no effect in alignkit; ignored" in capsys.readouterr().err


def test_trl_values_refused_with_advice_and_names_suggested():
    with pytest.raises(ConfigError, match=r"'use_dora: True' is not supported by alignkit: DoRA is not supported"):
        load_config(DPOConfig, None, ["--train_data", "x", "--use_dora"])
    with pytest.raises(ConfigError, match=r"'optim: adafactor' is not supported .*AdamW"):
        load_config(DPOConfig, None, ["--train_data", "x", "--optim", "adafactor"])
    assert (
        load_config(
            DPOConfig, None, ["--train_data", "x", "--optim", "adamw_torch", "--use_dora", "false"]
        ).learning_rate
        == 1e-6
    )  # TRL's defaults pass
    with pytest.raises(ConfigError, match=r"unknown key 'model_name_or_pth' \(did you mean 'model_name_or_path'\?\)"):
        load_config(DPOConfig, None, ["--model_name_or_pth", "m"])
    with pytest.raises(ConfigError, match="loss_type.*one loss at a time"):
        load_config(DPOConfig, None, ["--train_data", "x", "--loss_type", "sigmoid", "sft"])
    with pytest.raises(ConfigError, match="eval_strategy 'epoch': alignkit schedules by steps; set eval_steps"):
        load_config(DPOConfig, None, ["--train_data", "x", "--eval_strategy", "epoch"])


def test_shipped_trl_yaml_files_load():
    dpo = load_config(DPOConfig, "examples/from_trl/dpo.yaml", [])
    assert (dpo.model, dpo.train_data, dpo.loss_type, dpo.eval_steps, dpo.max_length, dpo.max_prompt_length) == (
        "embedded",
        "examples/data/arithmetic_pairs_train.jsonl",
        "sigmoid",
        10,
        256,
        None,
    )
    sft = load_config(SFTConfig, "examples/from_trl/sft.yaml", [])
    assert (sft.model, sft.train_data, sft.eval_split, sft.use_peft, sft.dtype) == (
        "embedded",
        "examples/data/sft_arithmetic.jsonl",
        0.0,
        True,
        "auto",  # torch_dtype: auto is the checkpoint's dtype, as in transformers and TRL
    )


def test_dataset_splits(tmp_path):
    import datasets

    from alignkit.data.preference import load_preference_data
    from alignkit.data.records import load_train_eval

    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(6)]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:4]), "test": datasets.Dataset.from_list(rows[4:])}
    ).save_to_disk(tmp_path / "dd")
    config = load_config(DPOConfig, None, ["--dataset_name", str(tmp_path / "dd"), "--dataset_test_split", "test"])
    train, held = load_train_eval(config, load_preference_data)
    assert [e.prompt for e in train] == ["q0", "q1", "q2", "q3"] and [e.prompt for e in held] == ["q4", "q5"]
    single = tmp_path / "p.jsonl"
    single.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AlignkitError, match="a single data file has one split"):
        load_train_eval(
            load_config(DPOConfig, None, ["--train_data", str(single), "--dataset_test_split", "test"]),
            load_preference_data,
        )


def test_a_trl_command_line_trains(tiny_model_dir, pairs_file, tmp_path):
    from alignkit.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "dpo",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--dataset_name",
            str(pairs_file),
            "--output_dir",
            str(out),
            "--max_length",
            "64",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--logging_steps",
            "1",
            "--learning_rate",
            "1e-4",
            "--report_to",
            "none",
            "--disable_tqdm",
            "--gradient_checkpointing",
            "--eval_strategy",
            "no",
            "--adam_beta2",
            "0.95",
            "--adam_epsilon",
            "1e-6",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["loss"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference at the first step
    groups = torch.load(out / "checkpoint-2" / "optimizer.pt", weights_only=False)["param_groups"]
    assert [(g["betas"], g["eps"]) for g in groups] == [((0.9, 0.95), 1e-6)] * len(groups)


# Command lines from TRL's documentation (hub ids replaced by local paths), with `trl` changed to `alignkit`.
TRL_DOCS = {
    "dpo": "--dataset_name ./ultrafeedback_binarized --model_name_or_path "
    "./Qwen2-0.5B-Instruct --learning_rate 5.0e-7 --num_train_epochs 1 "
    "--per_device_train_batch_size 2 --max_steps 1000 "
    "--gradient_accumulation_steps 8 --eval_strategy steps --eval_steps "
    "500 "
    "--warmup_steps 150 --lr_scheduler_type cosine --logging_steps 25 "
    "--output_dir Qwen2-0.5B-DPO --no_remove_unused_columns "
    "--use_peft --lora_r 32 --lora_alpha 16",
    "sft": "--model_name_or_path ./Qwen2.5-0.5B --dataset_name ./Capybara "
    "--learning_rate 2.0e-5 --num_train_epochs 1 --packing "
    "--per_device_train_batch_size 2 --gradient_accumulation_steps 8 "
    "--gradient_checkpointing --eval_strategy steps --eval_steps 100 "
    "--use_peft --lora_r 32 --lora_alpha 16 --output_dir Qwen2.5-0.5B-SFT",
    "reward": "--model_name_or_path ./Qwen2.5-0.5B-Instruct --dataset_name "
    "./ultrafeedback_binarized --output_dir Qwen2.5-0.5B-Reward "
    "--per_device_train_batch_size 8 --num_train_epochs 1 "
    "--gradient_checkpointing True --learning_rate 1.0e-5 --eval_strategy "
    "steps "
    "--eval_steps 50 --max_length 2048",
}


# What each documented command line must set (the alignkit name of every TRL flag it passes, with its value)
TRL_DOCS_SET = {
    "dpo": dict(
        train_data="./ultrafeedback_binarized",
        model="./Qwen2-0.5B-Instruct",
        learning_rate=5.0e-7,
        num_train_epochs=1,
        per_device_train_batch_size=2,
        max_steps=1000,
        gradient_accumulation_steps=8,
        eval_steps=500,
        warmup_steps=150,
        lr_scheduler_type="cosine",
        logging_steps=25,
        output_dir="Qwen2-0.5B-DPO",
        use_peft=True,
        lora_r=32,
        lora_alpha=16,
    ),
    "sft": dict(
        model="./Qwen2.5-0.5B",
        train_data="./Capybara",
        learning_rate=2.0e-5,
        num_train_epochs=1,
        packing=True,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=8,
        gradient_checkpointing=True,
        eval_steps=100,
        use_peft=True,
        lora_r=32,
        lora_alpha=16,
        output_dir="Qwen2.5-0.5B-SFT",
    ),
    "reward": dict(
        model="./Qwen2.5-0.5B-Instruct",
        train_data="./ultrafeedback_binarized",
        output_dir="Qwen2.5-0.5B-Reward",
        per_device_train_batch_size=8,
        num_train_epochs=1,
        gradient_checkpointing=True,
        learning_rate=1.0e-5,
        eval_steps=50,
        max_length=2048,
    ),
}


@pytest.mark.parametrize("command", sorted(TRL_DOCS))
def test_command_lines_from_trls_documentation_load(command):
    """Every flag of the documented command line sets the setting it names (a flag dropped or mapped to
    the wrong key on the way fails here, unless its value is also alignkit's default)."""
    from alignkit.cli import COMMANDS, _load

    cls = _load(COMMANDS[command].config)
    config = load_config(cls, None, TRL_DOCS[command].split())
    expected = TRL_DOCS_SET[command]
    assert {key: getattr(config, key) for key in expected} == expected
    if command == "reward":
        assert config.max_prompt_length is None


def test_negated_flags_and_generation_length():
    from alignkit.configs import GRPOConfig

    assert (
        load_config(DPOConfig, None, ["--train_data", "x", "--no_gradient_checkpointing"]).gradient_checkpointing
        is False
    )
    assert (
        load_config(GRPOConfig, None, ["--train_data", "p.jsonl", "--max_completion_length", "64"]).max_new_tokens == 64
    )
    with pytest.raises(ConfigError, match="'use_dora: True' is not supported"):
        load_config(SFTConfig, None, ["--train_data", "d", "--use_dora"])


def test_rl_names_follow_each_trainer():
    from alignkit.configs import GRPOConfig, RLOOConfig

    assert (
        load_config(RLOOConfig, None, ["--train_data", "p.jsonl", "--beta", "0.07"]).kl_coef == 0.07
    )  # TRL's RLOO: beta is the KL coefficient
    assert (
        load_config(GRPOConfig, None, ["--train_data", "p.jsonl", "--beta", "0.07"]).beta == 0.07
    )  # GRPO: beta in both


@pytest.mark.parametrize("command", ["dpo", "sft"])
def test_the_shipped_trl_yaml_trains(command, tiny_model_dir, tmp_path):
    """The TRL-named YAML files train as they are, with the settings they name (read back from the run's
    resolved config) and, for DPO, a first loss of log 2 (policy equals reference)."""
    import math

    import yaml

    from alignkit.cli import main

    out = tmp_path / command
    args = [command, f"examples/from_trl/{command}.yaml", "--model_name_or_path", str(tiny_model_dir)]
    args += ["--output_dir", str(out), "--max_steps", "1", "--disable_tqdm", "--preflight", "false"]
    assert main(args) == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if command == "dpo":  # loss_type: [sigmoid], eval_strategy: steps, gradient_accumulation_steps: 2 ...
        assert {k: resolved[k] for k in ("loss_type", "eval_steps", "gradient_accumulation_steps", "max_length")} == {
            "loss_type": "sigmoid",
            "eval_steps": 10,
            "gradient_accumulation_steps": 2,
            "max_length": 256,
        }
        assert resolved["lr_scheduler_type"] == "cosine" and resolved["report_to"] == ["none"]
        assert next(r["loss"] for r in records if "loss" in r) == pytest.approx(math.log(2), abs=1e-6)
    else:  # use_peft with TRL's LoRA keys; eval_strategy "no" turns evaluation off
        assert (resolved["use_peft"], resolved["lora_r"], resolved["lora_alpha"], resolved["max_length"]) == (
            True,
            16,
            32,
            128,
        )
        assert resolved["eval_split"] == 0.0 and (out / "final" / "adapter_config.json").is_file()
        assert not any(key.startswith("eval/") for r in records for key in r)
    assert (out / "final").is_dir()
