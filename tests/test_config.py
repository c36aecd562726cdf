"""Configs: YAML + flag overrides, validation messages that name the key, value and origin."""

import pytest

from alignkit.configs import DemoConfig, DPOConfig, load_config
from alignkit.errors import ConfigError


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_data: pairs.jsonl\nbeta: 0.3\nlearning_rate: 1.0e-5\nuse_peft: true\n")
    config = load_config(
        DPOConfig,
        path,
        [
            "--beta",
            "0.2",
            "--output_dir=out",
            "--lora_target_modules",
            "q_proj,v_proj",
            "--disable_tqdm",
            "--gradient_checkpointing",
            "false",
        ],
    )
    assert config.beta == 0.2  # flag wins over file
    assert config.learning_rate == 1e-5  # from file
    assert config.use_peft is True
    assert config.output_dir == "out"
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    assert config.disable_tqdm is True  # a bare flag means true
    assert config.gradient_checkpointing is False  # an explicit value overrides the default (true)


def test_flags_alone_without_yaml():
    config = load_config(
        DPOConfig, None, ["--train_data", "x.jsonl", "--max_steps", "7", "--use_peft", "false", "--eval_steps", "none"]
    )
    assert (config.max_steps, config.use_peft, config.eval_steps) == (7, False, None)


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'betta' \(did you mean 'beta'\?\)"):
        load_config(DPOConfig, None, ["--train_data", "x", "--betta", "0.1"])
    path = tmp_path / "c.yaml"
    path.write_text("train_data: x\nlearnig_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: unknown key 'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        load_config(DPOConfig, path)


def test_bad_value_names_key_value_and_origin(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(DPOConfig, None, ["--train_data", "x", "--beta", "-1"])
    assert "beta = -1 (command line): Input should be greater than 0" in str(info.value)
    path = tmp_path / "c.yaml"
    path.write_text("train_data: x\nlearning_rate: fast\n")
    with pytest.raises(ConfigError) as info:
        load_config(DPOConfig, path)
    assert f"learning_rate = 'fast' ({path}:2)" in str(info.value)  # the file's line


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="max_prompt_length \\(600\\) must be smaller than max_length \\(512\\)"):
        load_config(DPOConfig, None, ["--train_data", "x", "--max_length", "512", "--max_prompt_length", "600"])
    with pytest.raises(ConfigError, match="train_data is required"):
        load_config(DPOConfig, None, [])
    for max_length in ("512", "16"):  # TRL's habit: set max_length alone; there is no separate prompt limit by default
        assert load_config(DPOConfig, None, ["--train_data", "x", "--max_length", max_length]).max_prompt_length is None
    with pytest.raises(ConfigError, match="lr_scheduler_type 'wavy'"):
        load_config(DPOConfig, None, ["--train_data", "x", "--lr_scheduler_type", "wavy"])


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_data: x\nbeta: [0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(DPOConfig, path)


def test_a_key_given_twice_or_text_not_utf8_is_refused_by_line(tmp_path):
    """Plain YAML keeps the last of two equal keys silently; a config says where the second one is. Keys a
    ``<<`` merge brings may be overridden, as YAML intends."""
    path = tmp_path / "c.yaml"
    path.write_text("train_data: x\nbeta: 0.1\nlearning_rate: 1e-6\nbeta: 0.5\n")
    with pytest.raises(ConfigError, match=r"c.yaml:4: invalid YAML: key 'beta' is given twice \(first on line 2\)"):
        load_config(DPOConfig, path)
    path.write_text("lora: &lora {lora_r: 4, lora_alpha: 8}\nnested:\n  <<: *lora\n  lora_r: 16\n  lora_r: 32\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: invalid YAML: key 'lora_r' is given twice \(first on line 4\)"):
        load_config(DPOConfig, path)
    path.write_text("train_data: x\nbeta: 0.25\nmerged:\n  <<: {beta: 1}\n  beta: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'merged'"):  # parsed: the merge's key was overridden
        load_config(DPOConfig, path)
    path.write_bytes("train_data: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 16\); save the file as UTF-8"):
        load_config(DPOConfig, path)


def test_flag_needing_a_value():
    with pytest.raises(ConfigError, match="--beta needs a value"):
        load_config(DPOConfig, None, ["--train_data", "x", "--beta"])


def test_demo_defaults_use_lora_and_need_no_data():
    config = load_config(DemoConfig, None, [])
    assert config.use_peft is True and config.train_data is None
    assert load_config(DPOConfig, None, ["--train_data", "x"]).use_peft is False  # dpo defaults to full fine-tuning


def test_gpu_only_options_fail_clearly_without_a_gpu(monkeypatch):
    import torch

    from alignkit.errors import MissingDependencyError, require
    from alignkit.models.loading import gpu_only_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MissingDependencyError, match="load_in_4bit \\(QLoRA\\) needs a CUDA GPU"):
        gpu_only_options(load_in_4bit=True)
    with pytest.raises(MissingDependencyError, match="flash_attention_2 needs a CUDA GPU"):
        gpu_only_options(attn_implementation="flash_attention_2")
    with pytest.raises(MissingDependencyError, match=r"pip install 'alignkit\[gpu\]'"):
        require("alignkit_no_such_module", "gpu", "something")
    with pytest.raises(ConfigError, match="load_in_4bit trains LoRA adapters"):
        load_config(DPOConfig, None, ["--train_data", "x", "--load_in_4bit"])


@pytest.mark.parametrize(
    "targets,refused",
    [
        (".*(q_proj|lm_head)", "lm_head"),  # a regex, as PEFT takes it: no longer slips past the refusal
        (["q_proj", "lm_head"], "lm_head"),
        ("model\\.embed_tokens", "model.embed_tokens"),
        (".*", "lm_head"),
    ],
)
def test_lora_targets_are_resolved_against_the_model_and_refuse_output_layers(targets, refused):
    from conftest import build_model

    from alignkit.errors import AlignkitError
    from alignkit.models.loading import apply_lora

    with pytest.raises(AlignkitError, match=f"selects .*{refused}"):
        apply_lora(build_model(64, tie=False), 4, 8, 0.0, targets)


def test_lora_targets_as_a_regex_adapt_what_they_match_and_read_the_same_from_the_command_line():
    from conftest import build_model

    from alignkit.models.loading import apply_lora

    config = load_config(
        DPOConfig, None, ["--train_data", "x.jsonl", "--lora_target_modules", ".*layers\\.1\\..*q_proj"]
    )
    assert config.lora_target_modules == ".*layers\\.1\\..*q_proj"  # one regex, not a module of that name
    model = apply_lora(build_model(64), 4, 8, 0.0, config.lora_target_modules)
    adapted = sorted({n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A" in n})
    assert adapted == ["base_model.model.model.layers.1.self_attn.q_proj"]
    assert load_config(
        DPOConfig, None, ["--train_data", "x", "--lora_target_modules", "all-linear"]
    ).lora_target_modules == ("all-linear")


def test_push_to_hub_fails_before_anything_is_written_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    from alignkit.train.dpo import train_dpo

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    config = load_config(
        DPOConfig, None, ["--train_data", "x.jsonl", "--output_dir", str(tmp_path / "run"), "--push_to_hub", "true"]
    )
    with pytest.raises(Exception, match="push_to_hub: cannot push to 'run' at http://127.0.0.1:9"):
        train_dpo(config)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="push_to_hub"):
        load_config(DPOConfig, None, ["--train_data", "x", "--hub_model_id", "me/model"])


def test_dtype_auto_is_the_checkpoints_and_trust_remote_code_reaches_loading(tmp_path, monkeypatch):
    import torch
    from conftest import build_model, build_tokenizer
    from transformers import AutoModelForCausalLM

    from alignkit.models.loading import load_policy

    folder = tmp_path / "bf16-model"
    build_model(300).to(torch.bfloat16).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    seen = {}
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    args = ["--train_data", "x", "--model", str(folder), "--torch_dtype", "auto", "--trust_remote_code", "true"]
    model, _ = load_policy(load_config(DPOConfig, None, args))
    assert seen["trust_remote_code"] is True and next(model.parameters()).dtype == torch.bfloat16
    model, _ = load_policy(load_config(DPOConfig, None, ["--train_data", "x", "--model", str(folder)]))
    assert seen["trust_remote_code"] is False and next(model.parameters()).dtype == torch.float32  # the default


def test_grpo_refuses_the_kl_coefficient_it_would_ignore():
    """GRPO weighs its KL term with beta; RLConfig's kl_coef (PPO's and RLOO's reward penalty) did nothing
    there, so setting it is an error rather than a silent no-op."""
    from alignkit.configs import GRPOConfig, RLOOConfig

    with pytest.raises(ConfigError, match="alignkit grpo weighs its KL term with beta"):
        load_config(GRPOConfig, None, ["--train_data", "p.jsonl", "--kl_coef", "0.1"])
    assert load_config(GRPOConfig, None, ["--train_data", "p.jsonl", "--beta", "0.1"]).beta == 0.1
    assert load_config(RLOOConfig, None, ["--train_data", "p.jsonl", "--kl_coef", "0.1"]).kl_coef == 0.1


def test_stray_words_and_dashed_keys_on_the_command_line():
    """A word that is no ``--key`` is refused by name (a value given to a flag that takes none, a typo'd
    flag); ``--learning-rate`` is ``--learning_rate``, as argparse users type it."""
    for stray in ("stray", "--", "-v"):
        with pytest.raises(ConfigError, match=f"unexpected argument '{stray}': overrides look like --key value"):
            load_config(DPOConfig, None, ["--train_data", "x", stray])
    config = load_config(DPOConfig, None, ["--train_data", "x", "--learning-rate", "3e-6", "--max-steps=4"])
    assert (config.learning_rate, config.max_steps) == (3e-6, 4)


def test_config_files_that_are_missing_empty_or_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=f"config file not found: {tmp_path / 'none.yaml'}"):
        load_config(DPOConfig, tmp_path / "none.yaml", ["--train_data", "x"])
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set yet\n")
    assert load_config(DPOConfig, empty, ["--train_data", "x", "--beta", "0.3"]).beta == 0.3
    listed = tmp_path / "list.yaml"
    listed.write_text("- beta: 0.1\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of key: value, got list"):
        load_config(DPOConfig, listed)


def test_overrides_as_a_dict_are_checked_and_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_data: x\nbeta: 0.3\n")
    assert load_config(DPOConfig, path, {"beta": 0.2}).beta == 0.2
    with pytest.raises(ConfigError, match=r"overrides: unknown key 'betta' \(did you mean 'beta'\?\)"):
        load_config(DPOConfig, path, {"betta": 0.2})
    with pytest.raises(ConfigError, match=r"beta = -0.5 \(command line\)"):  # the API's overrides stand for flags
        load_config(DPOConfig, path, {"beta": -0.5})


def test_help_gives_each_keys_type_or_choices_and_default():
    from alignkit.configs.loading import describe_fields

    text = describe_fields(DPOConfig)
    groups = {block.splitlines()[0]: block for block in text.split("\n\n")}
    assert list(groups) == ["model:", "data:", "method:", "optimisation:", "logging and run directory:", "hardware:"]
    assert "--beta " in groups["method:"] and "--learning_rate " in groups["optimisation:"]
    assert "--gradient_checkpointing " in groups["hardware:"] and "--beta " not in groups["model:"]
    lines = {line.split(" (")[0].strip(): line.strip() for line in text.splitlines()}
    assert lines["--loss_type"] == "--loss_type (one of sigmoid|robust|hinge|ipo|simpo; default: sigmoid)"
    assert lines["--eval_data"] == "--eval_data (str; default: unset)"
    assert lines["--use_peft"] == "--use_peft (bool; default: false)"
    assert lines["--gradient_checkpointing"] == "--gradient_checkpointing (bool; default: true)"
    assert lines["--beta"] == "--beta (float; default: 0.1)"
    assert lines["--lora_target_modules"] == "--lora_target_modules (list or str; default: all-linear)"
    assert lines["--symptom_thresholds"] == "--symptom_thresholds (SymptomThresholds; default: see description)"
    assert lines["--report_to"] == "--report_to (list; default: tensorboard)"
    from alignkit.configs import EvalConfig

    lines = {line.split(" (")[0].strip(): line.strip() for line in describe_fields(EvalConfig).splitlines()}
    assert lines["--model"] == "--model (str; default: required)"
    assert lines["--lm_eval_tasks"] == "--lm_eval_tasks (list; default: none)"


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--max_steps", "0"], "max_steps must be a positive number of steps or -1, got 0"),
        (["--max_steps", "-2"], "max_steps must be a positive number of steps or -1, got -2"),
        (["--report_to", "none,tensorboard"], "report_to: 'none' cannot be combined with other loggers"),
        (["--eval_split", "1"], r"eval_split = 1 \(command line\): Input should be less than 1"),
        (["--warmup_ratio", "1.5"], r"warmup_ratio = 1.5 \(command line\): Input should be less than or equal to 1"),
        (["--max_nonfinite_steps", "0"], r"max_nonfinite_steps = 0 \(command line\): Input should be greater"),
        (["--beta", "[0.1"], r"beta = '\[0.1' \(command line\): Input should be a valid number"),  # not YAML: as typed
    ],
)
def test_values_out_of_range_are_refused(flags, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(DPOConfig, None, ["--train_data", "x", *flags])
    assert str(info.value).splitlines()[0] == "invalid configuration:"
    assert str(info.value).splitlines()[1].startswith("  " + flags[0][2:])  # the key first, cross-field ones too


def test_what_is_safe_by_default_and_checked_after_loading(tmp_path):
    """A run never deletes or continues an existing folder unless asked; a misspelt symptom threshold is
    refused like any key; a value set from Python after loading is validated too (the API's users do)."""
    config = load_config(DPOConfig, None, ["--train_data", "x"])
    assert (config.overwrite, config.resume, config.max_nonfinite_steps, config.min_lr_rate) == (False, False, 5, 0.1)
    assert (config.warmup_steps, config.warmup_ratio) == (0, 0.1)
    on = (
        "symptom_warnings",
        "preflight",
        "padding_free",
        "prefix_sharing",
        "gradient_checkpointing",
        "disable_dropout",
    )
    assert all(getattr(config, key) is True for key in on), {key: getattr(config, key) for key in on}
    with pytest.raises(ConfigError, match="early_acuracy"):
        load_config(DPOConfig, None, {"train_data": "x", "symptom_thresholds": {"early_acuracy": 0.9}})
    with pytest.raises(ValueError, match="greater than 0"):
        config.beta = -1.0
    with pytest.raises(ValueError, match="betta"):  # the Python API builds configs directly: a typo is refused too
        DPOConfig(train_data="x", betta=0.1)
    for loggers in (["none"], ["tensorboard", "wandb"]):
        assert load_config(DPOConfig, None, {"train_data": "x", "report_to": loggers}).report_to == loggers
    path = tmp_path / "c.yaml"
    path.write_text("train_data: x\nwarmup_steps: '0.05'\nmixed_precision: no\n")  # YAML reads a bare no as false
    config = load_config(DPOConfig, path)
    assert (config.warmup_steps, config.warmup_ratio, config.mixed_precision) == (0, 0.05, "no")
    with pytest.raises(ConfigError, match=r"max_prompt_length \(256\) must be smaller than max_length \(256\)"):
        load_config(DPOConfig, None, ["--train_data", "x", "--max_length", "256", "--max_prompt_length", "256"])


REQUIRED = {  # what each command needs set, taken by the configs that have the field
    "train_data": "x.jsonl",
    "model": "m",
    "data": "d.jsonl",
    "project": "p",
    "output": "o.jsonl",
    "prompts": "p.jsonl",
    "runs": ["r"],
    "input": "in.jsonl",
    "judge_base_url": "http://127.0.0.1:9/v1",
    "judge_model": "judge",
}


def config_classes():
    import alignkit.configs as configs

    return [getattr(configs, name) for name in sorted(configs.__all__) if name.endswith("Config")]


@pytest.mark.parametrize("cls", config_classes(), ids=lambda cls: cls.__name__)
def test_the_resolved_config_a_run_writes_loads_back_to_the_same_config(cls, tmp_path):
    """``config.yaml`` in a run directory is every field, defaults included; running it again must give the
    same config (GRPO refused its own file once: it holds RLConfig's kl_coef at its default)."""
    from alignkit.configs.loading import save_config

    config = load_config(cls, None, {key: value for key, value in REQUIRED.items() if key in cls.model_fields})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(cls, tmp_path / "config.yaml") == config
