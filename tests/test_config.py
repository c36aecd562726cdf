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
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        load_config(DPOConfig, path)


def test_bad_value_names_key_value_and_origin(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(DPOConfig, None, ["--train_data", "x", "--beta", "-1"])
    assert "beta = -1 (command line): Input should be greater than 0" in str(info.value)
    path = tmp_path / "c.yaml"
    path.write_text("train_data: x\nlearning_rate: fast\n")
    with pytest.raises(ConfigError) as info:
        load_config(DPOConfig, path)
    assert f"learning_rate = 'fast' ({path})" in str(info.value)


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
