"""Command lines and configs written for TRL, LLaMA-Factory and OpenRLHF, as their documentation shows
them (hub ids kept: nothing is loaded), resolve to the alignkit settings they mean; and the settings
added for them (text rows, data_fields, max_samples, eos_token, AdamW's betas, GRPO's loss types) act."""

import json
import math
import shlex
from pathlib import Path

import pytest
import torch

from alignkit.configs import (
    DPOConfig,
    GRPOConfig,
    KTOConfig,
    ORPOConfig,
    PPOConfig,
    RewardConfig,
    RLOOConfig,
    SFTConfig,
    load_config,
)
from alignkit.errors import AlignkitError, ConfigError

# (command, command line, what it must set): each from the tool's documentation or README
DOCUMENTED = {
    "trl sft, ChatML end on a base model": (
        SFTConfig,
        "--model_name_or_path Qwen/Qwen2-0.5B --dataset_name trl-lib/Capybara --learning_rate 2.0e-5 "
        "--num_train_epochs 1 --packing --per_device_train_batch_size 2 --gradient_accumulation_steps 8 "
        "--gradient_checkpointing --eos_token <|im_end|> --eval_strategy steps --eval_steps 100 "
        "--output_dir Qwen2-0.5B-SFT --max_seq_length 512 --dataset_text_field text --assistant_only_loss",
        dict(eos_token="<|im_end|>", packing=True, max_length=512, gradient_accumulation_steps=8, eval_steps=100),
    ),
    "trl grpo": (
        GRPOConfig,
        "--model_name_or_path Qwen/Qwen2-0.5B-Instruct --dataset_name trl-lib/tldr --num_generations 4 "
        "--max_completion_length 64 --per_device_train_batch_size 4 --learning_rate 1e-6 --beta 0.04 "
        "--temperature 0.9 --num_iterations 2 --epsilon 0.3 --logging_steps 10 --output_dir out "
        "--scale_rewards none --loss_type dr_grpo --use_vllm --vllm_mode colocate --log_completions "
        "--max_prompt_length 2048",
        dict(
            max_new_tokens=64,
            beta=0.04,
            num_ppo_epochs=2,
            cliprange=0.3,
            scale_rewards=False,
            loss_type="dr_grpo",
            max_length=2112,  # not given: the longest prompt plus the longest response
        ),
    ),
    "trl ppo": (
        PPOConfig,
        "--dataset_name trl-internal-testing/descriptiveness-sentiment-trl-style --dataset_train_split "
        "descriptiveness --learning_rate 3e-6 --output_dir models/minimal/ppo --per_device_train_batch_size 64 "
        "--gradient_accumulation_steps 1 --total_episodes 10000 --sft_model_path EleutherAI/pythia-1b-deduped "
        "--model_name_or_path EleutherAI/pythia-1b-deduped-tokenizer --reward_model_path EleutherAI/pythia-1b-rm "
        "--missing_eos_penalty 1.0 --num_mini_batches 4 --local_rollout_forward_batch_size 16",
        dict(max_steps=157, model="EleutherAI/pythia-1b-deduped", mini_batch_size=16, missing_eos_penalty=1.0),
    ),
    "trl kto (its script's docstring: transformers 5's fractional warmup_steps)": (
        KTOConfig,
        "--dataset_name trl-lib/kto-mix-14k --model_name_or_path=trl-lib/qwen1.5-1.8b-sft "
        "--per_device_train_batch_size 16 --num_train_epochs 1 --learning_rate 5e-7 --lr_scheduler_type=cosine "
        "--gradient_accumulation_steps 1 --eval_steps 500 --output_dir=kto-aligned-model --warmup_steps 0.1 "
        "--logging_first_step",
        dict(warmup_ratio=0.1, warmup_steps=0, lr_scheduler_type="cosine", per_device_train_batch_size=16),
    ),
    "trl gspo (examples/scripts/gspo.py, but for steps_per_generation)": (
        GRPOConfig,
        "--model_name_or_path Qwen/Qwen3-0.6B --output_dir gspo-Qwen3-0.6B --learning_rate 1e-5 --dtype bfloat16 "
        '--max_completion_length 1024 --use_peft --lora_target_modules "q_proj", "v_proj" --log_completions '
        "--per_device_train_batch_size 8 --num_generations 8 --importance_sampling_level sequence --epsilon 3e-4 "
        "--epsilon_high 4e-4 --beta 0.0 --loss_type grpo --gradient_accumulation_steps 2 --train_data p.jsonl",
        dict(
            importance_sampling_level="sequence",
            cliprange=3e-4,
            cliprange_high=4e-4,
            beta=0.0,
            loss_type="grpo",
            lora_target_modules=["q_proj", "v_proj"],
            max_new_tokens=1024,
        ),
    ),
    "trl dpo, transformers' optimiser flags": (
        DPOConfig,
        "--model_name_or_path m --dataset_name d --adam_beta1 0.85 --adam_beta2 0.95 --adam_epsilon 1e-6 "
        "--logging_first_step --deepspeed ds_z3.json --local_rank=0 --truncation_mode keep_start "
        "--resume_from_checkpoint false --tf32 true --ddp_find_unused_parameters false "
        '--model_init_kwargs \'{"torch_dtype": "bfloat16", "device_map": "auto"}\'',
        dict(adam_beta1=0.85, adam_beta2=0.95, adam_epsilon=1e-6, resume=False, dtype="bfloat16"),
    ),
    "openrlhf train_dpo": (
        DPOConfig,
        "--save_path ./checkpoint/llama3-8b-dpo --save_steps -1 --logging_steps 1 --eval_steps -1 "
        "--train_batch_size 256 --micro_train_batch_size 1 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --bf16 "
        "--max_epochs 1 --max_len 8192 --zero_stage 3 --learning_rate 5e-7 --beta 0.1 "
        "--dataset OpenRLHF/preference_dataset_mixture2_and_safe_pku --apply_chat_template --chosen_key chosen "
        "--rejected_key rejected --flash_attn --load_checkpoint --packing_samples --gradient_checkpointing",
        dict(
            output_dir="./checkpoint/llama3-8b-dpo",
            eval_steps=None,
            gradient_accumulation_steps=256,
            per_device_train_batch_size=1,
            model="OpenRLHF/Llama-3-8b-sft-mixture",
            mixed_precision="bf16",
            max_length=8192,
            train_data="OpenRLHF/preference_dataset_mixture2_and_safe_pku",
            resume=False,  # nothing there yet: OpenRLHF's load_checkpoint loads one only if present
            padding_free=True,
            data_fields={},
        ),
    ),
    "openrlhf train_sft": (
        SFTConfig,
        "--max_len 4096 --dataset Open-Orca/OpenOrca --input_key question --output_key response "
        "--train_batch_size 256 --micro_train_batch_size 2 --max_samples 500000 --pretrain meta-llama/Meta-Llama-3-8B "
        "--save_path ./checkpoint/llama3-8b-sft --zero_stage 2 --max_epochs 1 --bf16 --flash_attn "
        "--learning_rate 5e-6 --lr_warmup_ratio 0.03 --adam_betas 0.9 0.95 --l2 0.01 --max_norm 0.5 "
        "--lora_rank 32 --target_modules q_proj v_proj --use_tensorboard logs",
        dict(
            data_fields={"prompt": "question", "completion": "response"},
            gradient_accumulation_steps=128,
            max_samples=500000,
            warmup_ratio=0.03,
            adam_beta2=0.95,
            weight_decay=0.01,
            max_grad_norm=0.5,
            use_peft=True,
            lora_r=32,
            lora_target_modules=["q_proj", "v_proj"],
            report_to=["tensorboard"],
        ),
    ),
    "openrlhf train_ppo_ray (its placement and vLLM flags noted)": (
        PPOConfig,
        "--ref_num_nodes 1 --ref_num_gpus_per_node 8 --actor_num_nodes 1 --actor_num_gpus_per_node 8 "
        "--vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models --pretrain OpenRLHF/Llama-3-8b-sft "
        "--reward_pretrain OpenRLHF/Llama-3-8b-rm --save_path final/llama3-8b-rlhf --ckpt_path ckpt/llama3-8b-rlhf "
        "--save_hf_ckpt --micro_train_batch_size 8 --train_batch_size 128 --micro_rollout_batch_size 16 "
        "--rollout_batch_size 1024 --n_samples_per_prompt 1 --max_epochs 1 --prompt_max_len 1024 --max_samples 100000 "
        "--generate_max_len 1024 --zero_stage 3 --bf16 --actor_learning_rate 5e-7 --init_kl_coef 0.01 "
        "--prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template "
        "--packing_samples --adam_offload --flash_attn --gradient_checkpointing",
        dict(
            model="OpenRLHF/Llama-3-8b-sft",
            train_data="OpenRLHF/prompt-collection-v0.1",
            per_device_train_batch_size=1024,
            mini_batch_size=128,
            learning_rate=5e-7,
            kl_coef=0.01,
            max_new_tokens=1024,
            max_length=2048,
            data_fields={"prompt": "context_messages"},
        ),
    ),
    "openrlhf train_dpo, grouped names (examples/scripts/train_dpo_llama.sh)": (
        DPOConfig,
        "--ckpt.output_dir ./checkpoint/llama3-8b-dpo --ckpt.save_steps -1 --logger.logging_steps 1 --eval.steps -1 "
        "--train.batch_size 256 --train.micro_batch_size 1 --model.model_name_or_path OpenRLHF/Llama-3-8b-sft-mixture "
        "--ds.param_dtype bf16 --train.max_epochs 1 --data.max_len 8192 --ds.zero_stage 3 --adam.lr 5e-7 "
        "--model.beta 0.1 --data.dataset OpenRLHF/preference_dataset_mixture2_and_safe_pku --data.apply_chat_template "
        "--data.chosen_key chosen --data.rejected_key rejected --ds.attn_implementation flash_attention_2 "
        "--ckpt.load_enable --ds.packing_samples --model.gradient_checkpointing_enable",
        dict(
            output_dir="./checkpoint/llama3-8b-dpo",
            eval_steps=None,
            save_steps=2**31 - 1,
            gradient_accumulation_steps=256,
            model="OpenRLHF/Llama-3-8b-sft-mixture",
            mixed_precision="bf16",
            max_length=8192,
            learning_rate=5e-7,
            train_data="OpenRLHF/preference_dataset_mixture2_and_safe_pku",
            padding_free=True,
            gradient_checkpointing=True,
        ),
    ),
    "openrlhf group_norm, grouped names (after examples/scripts/train_dapo_ray_hybrid_engine.sh)": (
        GRPOConfig,
        "--actor.model_name_or_path m --data.prompt_dataset p.jsonl --data.input_key prompt --algo.kl.init_coef 1e-3 "
        "--algo.advantage.gamma 1.0 --algo.kl.use_loss --algo.kl.estimator k3 --algo.advantage.estimator group_norm "
        "--rollout.n_samples_per_prompt 8 --actor.eps_clip_low_high 0.2 0.28 --train.max_epochs 2 "
        "--rollout.max_new_tokens 512 --vllm.num_engines 4 --vllm.enable_sleep --train.colocate_all",
        dict(beta=1e-3, num_generations=8, cliprange=0.2, cliprange_high=0.28, num_ppo_epochs=2, max_new_tokens=512),
    ),
    "openrlhf train_kto": (
        KTOConfig,
        "--pretrain m --dataset d --input_key instruction --output_key response --label_key score "
        "--desirable_loss_weight 1.0 --undesirable_loss_weight 1.33 --micro_train_batch_size 4 --train_batch_size 8",
        dict(
            data_fields={"prompt": "instruction", "completion": "response", "label": "score"},
            undesirable_weight=1.33,
            gradient_accumulation_steps=2,
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_command_lines_of_other_tools_set_what_they_mean(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # load_checkpoint looks at output_dir
    cls, line, expected = DOCUMENTED[name]
    config = load_config(cls, None, shlex.split(line))
    assert {key: getattr(config, key) for key in expected} == expected


SHIPPED_LLAMA_FACTORY = Path(__file__).resolve().parents[1] / "examples" / "from_llamafactory" / "dpo_lora.yaml"


def test_a_llama_factory_config_means_what_it_says_there_and_runs_only_under_its_stage(capsys, tmp_path):
    path = SHIPPED_LLAMA_FACTORY
    config = load_config(DPOConfig, path)
    names = ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
    lora = {"use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target_modules": "all-linear"}
    assert {k: getattr(config, k) for k in names} == lora  # LLaMA-Factory's defaults: alpha 2 x rank, no dropout
    assert (config.beta, config.loss_type, config.max_length, config.max_samples) == (0.1, "sigmoid", 256, 1000)
    assert (config.eval_split, config.overwrite, config.resume, config.gradient_accumulation_steps) == (
        0.1,
        True,
        False,
        8,
    )
    assert "'template' (LLaMA-Factory/OpenRLHF) ignored: alignkit formats rows with the model's own chat" in (
        capsys.readouterr().err
    )
    # given values win over LLaMA-Factory's LoRA defaults, as there
    assert load_config(DPOConfig, path, ["--lora_rank", "4", "--lora_alpha", "4"]).lora_alpha == 4
    assert load_config(DPOConfig, path, ["--lora_rank", "4"]).lora_alpha == 8
    with pytest.raises(ConfigError, match="stage 'dpo': run it with alignkit dpo"):
        load_config(SFTConfig, path)
    with pytest.raises(ConfigError, match="stage 'dpo': run it with alignkit orpo"):
        load_config(DPOConfig, path, ["--pref_loss", "orpo"])
    assert load_config(DPOConfig, path, ["--pref_loss", "hinge"]).loss_type == "hinge"  # the flag replaces the file's
    assert load_config(DPOConfig, path, ["--pref_loss", "hinge", "--loss_type", "ipo"]).loss_type == "ipo"
    orpo = load_config(ORPOConfig, path, ["--pref_loss", "orpo"])  # LLaMA-Factory's ORPO: stage dpo, pref_loss orpo
    assert (orpo.beta, orpo.lora_r) == (0.1, 8)
    silent = tmp_path / "lora.yaml"  # LLaMA-Factory's LoRA where the file says only finetuning_type: lora
    silent.write_text("stage: dpo\nfinetuning_type: lora\ndataset: d.jsonl\n")
    assert [getattr(load_config(DPOConfig, silent), k) for k in ("lora_r", "lora_alpha", "lora_dropout")] == [8, 16, 0]
    with pytest.raises(ConfigError, match=r"'quantization_bit' \(LLaMA-Factory\): quantization_bit 8: .*4 bits"):
        load_config(DPOConfig, path, ["--quantization_bit", "8"])


def test_the_shipped_llama_factory_config_trains(tiny_model_dir, tmp_path):
    """One step of the shipped LLaMA-Factory YAML on the tiny model: LoRA r8 at DPO's log 2 (policy equals
    reference), with only the model, output and length of the run overridden."""
    from alignkit.cli import main

    out = tmp_path / "run"
    args = ["dpo", str(SHIPPED_LLAMA_FACTORY), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out)]
    assert main([*args, "--max_steps", "1", "--logging_steps", "1", "--disable_tqdm", "--preflight", "false"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert next(r["loss"] for r in records if "loss" in r) == pytest.approx(math.log(2), abs=1e-6)
    adapter = json.loads((out / "final" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (8, 16)


def test_openrlhf_batch_and_resume_follow_the_launch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = ["--pretrain", "m", "--dataset", "d", "--micro_train_batch_size", "4", "--train_batch_size", "32"]
    monkeypatch.setenv("WORLD_SIZE", "2")  # two processes: 32 = 4 x 2 x 4
    assert load_config(RewardConfig, None, line).gradient_accumulation_steps == 4
    # TRL's PPO counts prompts over all processes: 10000 / (64 x 2) = 78.1 -> 79 steps; 8 prompts x 2 samples
    # over 4 minibatches -> 4 sequences each
    ppo = ["--train_data", "p", "--per_device_train_batch_size", "64", "--total_episodes", "10000"]
    assert load_config(PPOConfig, None, ppo).max_steps == 79
    ppo = [
        "--train_data",
        "p",
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "2",
        "--num_mini_batches",
        "4",
    ]
    assert load_config(PPOConfig, None, ppo).mini_batch_size == 4
    with pytest.raises(ConfigError, match="train_batch_size 30 .* not a multiple of micro_train_batch_size 4 x 2"):
        load_config(RewardConfig, None, [*line[:-1], "30"])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")
    resumed = load_config(RewardConfig, None, [*line, "--save_path", "run", "--load_checkpoint"])
    assert resumed.resume is True and resumed.save_steps == 500  # saves keep alignkit's default unless -1 is given


def test_trl_names_that_would_change_the_result_are_refused_with_advice():
    for cls, flags, message in (
        (GRPOConfig, ["--scale_rewards", "batch"], "scale_rewards 'batch'"),
        (GRPOConfig, ["--delta", "4"], "'delta: 4' is not supported by alignkit: two-sided clipping"),
        (GRPOConfig, ["--resume_from_checkpoint", "out/checkpoint-500"], "set output_dir to the run's folder"),
        (KTOConfig, ["--loss_type", "apo_zero_unpaired"], r"alignkit kto trains one loss \(kto, TRL's default\)"),
        (SFTConfig, ["--loss_type", "dft"], r"alignkit sft trains one loss \(nll"),
        (DPOConfig, ["--model_init_kwargs", '{"low_cpu_mem_usage": true}'], "model_init_kwargs 'low_cpu_mem_usage'"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(cls, None, ["--train_data", "p.jsonl", *flags])
    # TRL's default, which is what alignkit's single loss is, passes
    assert load_config(KTOConfig, None, ["--train_data", "p.jsonl", "--loss_type", "kto"]).beta == 0.1


def test_data_fields_and_max_samples_choose_what_is_read(tmp_path):
    from alignkit.data.methods import data_loader
    from alignkit.data.records import load_train_eval

    rows = [{"question": f"q{i}", "response": f"r{i}", "id": i} for i in range(5)]
    path = tmp_path / "orca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(
        SFTConfig,
        None,
        ["--dataset", str(path), "--input_key", "question", "--output_key", "response", "--max_samples", "3"],
    )
    train, held = load_train_eval(config, data_loader("sft"))
    assert [(e.prompt, e.completion) for e in train] == [("q0", "r0"), ("q1", "r1"), ("q2", "r2")] and held == []
    with pytest.raises(AlignkitError, match=r"orca.jsonl:1.*expected an object with 'messages'"):
        load_train_eval(load_config(SFTConfig, None, ["--train_data", str(path)]), data_loader("sft"))


def test_plain_text_rows_train_on_every_token_and_end_with_eos(tiny_tokenizer, tmp_path):
    from alignkit.data.sft import load_sft_data, sft_rows

    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"text": "the cat sat"}) + "\n" + json.dumps({"text": " "}) + "\n")
    with pytest.raises(AlignkitError, match=r"text.jsonl:2.*text.*expected non-empty text"):
        load_sft_data(str(path))
    path.write_text(json.dumps({"text": "the cat sat"}) + "\n")
    rows = sft_rows(load_sft_data(str(path)), tiny_tokenizer, max_length=64, max_prompt_length=None)
    ids = tiny_tokenizer("the cat sat", add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    assert rows.items == [{"ids": ids, "mask": [1] * len(ids)}]


def test_eos_token_becomes_the_tokenizers_and_generations(tiny_model, tiny_tokenizer):
    from copy import deepcopy

    from alignkit.models.loading import use_eos_token

    tokenizer = deepcopy(tiny_tokenizer)
    use_eos_token(tiny_model, tokenizer, "<|endoftext|>")
    expected = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert expected != tiny_tokenizer.eos_token_id
    assert (tokenizer.eos_token_id, tiny_model.generation_config.eos_token_id) == (expected, expected)
    with pytest.raises(AlignkitError, match="eos_token '<\\|eot_id\\|>' is not a token of the model's vocabulary"):
        use_eos_token(tiny_model, tokenizer, "<|eot_id|>")


def test_grpo_loss_types_normalise_as_trl_names_them():
    """Ratio 1 and beta 0, so each token's loss is minus its sequence's advantage: sequence 0 (advantage 1)
    has 2 tokens, sequence 1 (advantage -2) has 3. grpo: mean(-1, 2) = 0.5; bnpo/dapo: (-2 + 6) / 5 = 0.8;
    dr_grpo with a 5-token limit: 4 / (2 x 5) = 0.4."""
    from alignkit.losses.rl import grpo_loss

    logps = torch.log(torch.tensor([[0.5, 0.25, 0.5], [0.125, 0.5, 0.5]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    advantages = torch.tensor([1.0, -2.0])
    got = {
        kind: grpo_loss(logps, logps, logps, advantages, mask, 0.2, 0.0, kind, 5)[0].item()
        for kind in ("grpo", "bnpo", "dapo", "dr_grpo")
    }
    assert got == pytest.approx({"grpo": 0.5, "bnpo": 0.8, "dapo": 0.8, "dr_grpo": 0.4})


def test_trls_implicit_prompt_in_plain_text_pairs_and_its_documented_report_to_no(tmp_path):
    """Anthropic HH's rows have no prompt: the shared text up to the last whitespace before the answers
    differ is the prompt (that whitespace starts each response, as TRL's extract_prompt leaves it)."""
    from alignkit.data.preference import load_preference_data

    path = tmp_path / "hh.jsonl"
    rows = [
        {
            "chosen": "\n\nHuman: Name a pet.\n\nAssistant: The cat.",
            "rejected": "\n\nHuman: Name a pet.\n\nAssistant: The car.",
        },
        {"chosen": "cat", "rejected": "car"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        AlignkitError, match="hh.jsonl:2: field 'prompt': missing, and chosen/rejected share no leading"
    ):
        load_preference_data(str(path))
    user = [{"role": "user", "content": "hi"}]
    for chosen, rejected in (("a b", "c b"), ([{"role": "user", "content": "x"}], user)):  # they differ at once
        path.write_text(json.dumps({"chosen": chosen, "rejected": rejected}) + "\n")
        with pytest.raises(AlignkitError, match="field 'prompt': missing, and chosen/rejected share no leading"):
            load_preference_data(str(path))
    prefix = {"chosen": "Q: ok? A: yes", "rejected": "Q: ok? A: yes, surely"}  # one answer begins the other
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(prefix) + "\n")
    pair, second = load_preference_data(str(path))
    assert (pair.prompt, pair.chosen, pair.rejected) == ("\n\nHuman: Name a pet.\n\nAssistant: The", " cat.", " car.")
    assert (second.prompt, second.chosen, second.rejected) == ("Q: ok? A:", " yes", " yes, surely")
    config = tmp_path / "sft.yaml"  # TRL's CLI page: report_to: no, which YAML reads as false
    config.write_text(
        "model_name_or_path: m\ndataset_name: stanfordnlp/imdb\ndataset_text_field: text\nreport_to: no\n"
    )
    assert load_config(SFTConfig, config).report_to == ["none"]


def test_trls_reward_funcs_and_reward_model_become_reward_terms():
    """TRL's grpo script: --reward_funcs (built-in names) and --reward_model_name_or_path, in either order
    and from file or flags, add up; a function alignkit does not know is refused with the way to give one."""
    import re

    line = ["--train_data", "p.jsonl", "--reward_model_name_or_path", "rm", "--reward_funcs", "accuracy_reward"]
    config = load_config(GRPOConfig, None, [*line, "think_format_reward"])
    kinds = {r.kind: r for r in config.rewards}  # terms are summed: their order is only the log's
    assert len(config.rewards) == 3 and set(kinds) == {"verifier", "regex", "reward_model"}
    assert kinds["reward_model"].model == "rm"
    think = re.compile(kinds["regex"].pattern)  # TRL's think_format_reward: 1 for "<think>...</think>answer"
    assert [bool(think.search(t)) for t in ("<think>\nso\n</think>\n4", "<think>so 4", "4 <think>so</think>")] == [
        True,
        False,
        False,
    ]
    with pytest.raises(ConfigError, match=r"reward_funcs 'my_lib.rewards.custom': .*kind: python"):
        load_config(GRPOConfig, None, ["--train_data", "p.jsonl", "--reward_funcs", "my_lib.rewards.custom"])


def test_a_trl_yaml_dataset_mixture_is_read_one_dataset_after_another(tmp_path):
    """TRL's CLI page: ``datasets:`` entries (path, data_files, split, data_dir) and ``test_split_size``."""
    config = tmp_path / "dpo.yaml"
    entry = "  - path: json\n    data_files: pairs.jsonl\n    split: train\n    columns: [prompt, chosen, rejected]\n"
    config.write_text(f"model_name_or_path: m\ndatasets:\n{entry}streaming: false\ntest_split_size: 0.2\n")
    loaded = load_config(DPOConfig, config)
    assert (loaded.train_data, loaded.dataset_train_split, loaded.eval_split) == ("pairs.jsonl", "train", 0.2)
    config.write_text("datasets:\n  - path: ./hh_folder\n    split: validation\n")
    assert (load_config(DPOConfig, config).train_data, load_config(DPOConfig, config).dataset_train_split) == (
        "./hh_folder",
        "validation",
    )
    config.write_text(f"model_name_or_path: m\ndatasets:\n{entry}  - path: org/prefs\n    data_dir: data/rl\n")
    assert load_config(DPOConfig, config).train_data == "pairs.jsonl,org/prefs/data/rl"
    config.write_text(f"datasets:\n{entry}  - path: org/prefs\n    split: test\n")
    with pytest.raises(ConfigError, match="the entries' splits differ \\(test, train\\)"):
        load_config(DPOConfig, config)
    config.write_text("datasets:\n  - path: json\n    data_files: [a.jsonl]\n")  # a list of one file
    assert load_config(DPOConfig, config).train_data == "a.jsonl"
    for extra, message in (
        ("    fraction: 0.5\n", "fraction are not supported"),
        ("    name: en\n", "name \\(subset\\) and fraction"),
        ("test_split_size: 1\n", "test_split_size 1: give a fraction below 1"),
    ):
        config.write_text("datasets:\n  - path: json\n    data_files: a.jsonl\n" + extra)
        with pytest.raises(ConfigError, match=message):
            load_config(DPOConfig, config)
    # transformers' older name of eval_strategy turns evaluation off too
    assert (
        load_config(
            DPOConfig, None, ["--train_data", "d", "--eval_split", "0.3", "--evaluation_strategy", "no"]
        ).eval_split
        == 0
    )


@pytest.mark.parametrize(
    "cls, flags, expected",
    [
        (SFTConfig, "--use_peft true --finetuning_type full", dict(use_peft=False)),
        (SFTConfig, "--lora_rank 0", dict(use_peft=False, lora_r=16)),  # OpenRLHF: rank 0 is no LoRA
        (SFTConfig, "--finetuning_type lora --quantization_bit 4 --quantization_type NF4", dict(load_in_4bit=True)),
        (SFTConfig, "--val_size 0", dict(eval_split=0.0)),
        (SFTConfig, "--disable_gradient_checkpointing true", dict(gradient_checkpointing=False)),
        (
            SFTConfig,
            "--adam_betas 0.8,0.95 --save_steps -1 --eval_steps -1",
            dict(adam_beta1=0.8, save_steps=2**31 - 1),
        ),
        (SFTConfig, "--eval_steps 7 --save_steps 9", dict(eval_steps=7, save_steps=9)),  # only -1 means never
        (DPOConfig, "--pref_bco_weight 0 --aux_loss_coef 0.0 --ring_attn_size 1", dict(beta=0.1)),  # their off values
        (DPOConfig, "--optim adam", dict(beta=0.1)),  # OpenRLHF's AdamW
        (
            DPOConfig,
            "--optim adamw_torch_fused",
            dict(beta=0.1),
        ),  # TRL's fast AdamW: OpenRLHF's optim must not claim it
        (
            SFTConfig,
            "--pure_bf16 true --use_galore false --galore_rank 128",
            dict(dtype="bfloat16", mixed_precision="no"),
        ),
    ],
)
def test_llama_factory_and_openrlhf_values_convert(cls, flags, expected):
    config = load_config(cls, None, ["--train_data", "d.jsonl", *flags.split()])
    assert {key: getattr(config, key) for key in expected} == expected


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--val_size 1", "val_size 1: give a fraction below 1"),
        ("--pref_bco_weight 0.5", "BCO's weight is not supported"),
        ("--aux_loss_coef 0.01", "mixture-of-experts router losses"),
        ("--ring_attn_size 2", "sequence parallelism is not supported"),
        ("--finetuning_type freeze", "finetuning_type 'freeze'"),
        ("--adam_betas 0.9", "give two numbers"),
        (
            "--use_galore true",
            "'use_galore' \\(LLaMA-Factory\\): True is not supported by alignkit: alignkit trains with AdamW",
        ),
        ("--use_dft_loss true", "SFT's loss is the cross-entropy"),
        ("--loraplus_lr_ratio 16", "one learning rate"),
        ("--dataset a.jsonl,b.jsonl --dataset_probs 0.5,0.5", "datasets are read whole, one after another"),
    ],
)
def test_llama_factory_and_openrlhf_values_alignkit_lacks_are_refused(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DPOConfig, None, ["--train_data", "d.jsonl", *flags.split()])


def test_dropped_launch_flags_say_so_once_and_only_when_set(capsys):
    load_config(DPOConfig, None, ["--train_data", "d.jsonl", "--zero_stage", "3", "--flash_attn", "auto"])
    err = capsys.readouterr().err
    assert "'zero_stage' (LLaMA-Factory/OpenRLHF) ignored: sharding is chosen at launch" in err
    assert "flash_attn" not in err  # LLaMA-Factory's auto: nothing asked for


SHIPPED_TORCHTUNE = Path(__file__).resolve().parents[1] / "examples" / "from_torchtune" / "lora_dpo.yaml"


def test_a_torchtune_recipe_config_and_its_key_value_overrides(tiny_model_dir, tmp_path, capsys):
    """torchtune's nested sections read as dotted names: LoRA on its attention list (output_proj is
    o_proj) plus the MLP, DPOLoss as sigmoid, cosine warm-up, max_steps_per_epoch x epochs; then one step
    of the shipped file on the tiny model (log 2), with key=value overrides as `tune run` takes them."""
    from alignkit.cli import main

    config = load_config(DPOConfig, SHIPPED_TORCHTUNE, ["optimizer.lr=1e-5", "batch_size=2", "epochs=2"])
    got = {k: getattr(config, k) for k in ("model", "lora_r", "lora_alpha", "max_length", "learning_rate")}
    assert got == {"model": "embedded", "lora_r": 8, "lora_alpha": 16, "max_length": 256, "learning_rate": 1e-5}
    assert config.lora_target_modules == ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (config.loss_type, config.lr_scheduler_type, config.warmup_steps, config.max_steps_per_epoch) == (
        "sigmoid",
        "cosine",
        100,
        30,
    )
    assert (config.per_device_train_batch_size, config.weight_decay, config.seed, config.dtype) == (
        2,
        0.05,
        42,
        "float32",
    )
    assert "'tokenizer.*' (torchtune) ignored: the tokenizer is the model folder's" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"'loss._component_' \(torchtune\): loss torchtune.rlhf.loss.PPOLoss"):
        load_config(DPOConfig, SHIPPED_TORCHTUNE, ["loss._component_=torchtune.rlhf.loss.PPOLoss"])
    out = tmp_path / "run"
    args = ["dpo", str(SHIPPED_TORCHTUNE), f"checkpointer.checkpoint_dir={tiny_model_dir}", f"output_dir={out}"]
    # two epochs capped at one step each (uncapped, the file's 120 pairs in steps of 1 x 2 are 60 steps an epoch)
    overrides = ["max_steps_per_epoch=1", "epochs=2", "batch_size=1", "gradient_accumulation_steps=2"]
    assert main([*args, *overrides, "log_every_n_steps=1", "--disable_tqdm", "--preflight", "false"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert [(r["step"], r["epoch"]) for r in steps] == [(1, 1.0), (2, 2.0)]


TORCHTUNE_FULL = """
output_dir: /tmp/torchtune/llama3_2_1B/full
model:
  _component_: torchtune.models.llama3_2.qlora_llama3_2_1b
tokenizer:
  _component_: torchtune.models.llama3.llama3_tokenizer
  path: /tmp/Llama-3.2-1B-Instruct/original/tokenizer.model
  max_seq_len: null
checkpointer:
  _component_: torchtune.training.FullModelHFCheckpointer
  checkpoint_dir: /tmp/Llama-3.2-1B-Instruct/
  output_dir: ${output_dir}
  keep_last_n_checkpoints: 2
ref_checkpointer:
  checkpoint_dir: /tmp/Llama-3.2-1B-Instruct/
dataset:
  _component_: torchtune.datasets.preference_dataset
  source: json
  data_files: pairs.jsonl
batch_size: 4
batch_size_val: ${batch_size}
run_val_every_n_steps: 50
clip_grad_norm: null
optimizer:
  _component_: bitsandbytes.optim.PagedAdamW
  lr: 2e-5
profiler:
  _component_: torchtune.training.setup_torch_profiler
  enabled: False
  cpu: True
  cuda: True
log_every_n_steps: null
"""


def test_torchtune_recipe_configs_resolve_references_and_their_null_settings(tmp_path, capsys):
    """The shape of torchtune's own recipe configs: ``${batch_size}`` follows a ``batch_size=2`` override,
    ``clip_grad_norm: null`` is no clipping, ``max_seq_len: null`` keeps alignkit's length, a qlora model
    component is QLoRA, PagedAdamW is AdamW (8-bit states are refused), the reference checkpoint must be
    the model's, and a dropped section gets one notice."""
    path = tmp_path / "1B_full.yaml"
    path.write_text(TORCHTUNE_FULL)
    config = load_config(DPOConfig, path, ["batch_size=2"])
    got = {k: getattr(config, k) for k in ("per_device_train_batch_size", "per_device_eval_batch_size", "eval_steps")}
    assert got == {"per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "eval_steps": 50}
    assert (config.max_grad_norm, config.max_length, config.save_total_limit) == (0.0, 1024, 2)
    assert (config.use_peft, config.load_in_4bit, config.model) == (True, True, "/tmp/Llama-3.2-1B-Instruct/")
    err = capsys.readouterr().err
    assert err.count("'profiler.*' (torchtune) ignored") == 1 and "'checkpointer.*' (torchtune) ignored" in err
    with pytest.raises(ConfigError, match="PagedAdamW8bit: alignkit trains with torch AdamW; 8-bit states"):
        load_config(DPOConfig, path, ["optimizer._component_=bitsandbytes.optim.PagedAdamW8bit"])
    with pytest.raises(ConfigError, match="ref_checkpointer.checkpoint_dir /tmp/other: the reference is the model"):
        load_config(DPOConfig, path, ["ref_checkpointer.checkpoint_dir=/tmp/other"])


def test_openrlhf_grouped_ppo_line_keeps_its_critic_rate_and_normalised_reward_model():
    """OpenRLHF's README PPO line (grouped names): the critic's learning rate is the value head's, the
    reward model's scores are normalised by its stored statistics; an estimator or KL placement another
    command trains is refused, naming that command."""
    line = (
        "--ref.num_nodes 1 --ref.num_gpus_per_node 8 --reward.num_nodes 1 --critic.num_gpus_per_node 8 "
        "--vllm.num_engines 4 --vllm.tensor_parallel_size 2 --train.colocate_all --vllm.gpu_memory_utilization 0.5 "
        "--actor.model_name_or_path OpenRLHF/Llama-3-8b-sft-mixture --reward.model_name_or_path rm "
        "--ckpt.output_dir final/llama3-8b-rlhf --ckpt.path ckpt/llama3-8b-rlhf --ckpt.save_hf --train.batch_size 128 "
        "--rollout.batch_size 1024 --rollout.n_samples_per_prompt 1 --train.max_epochs 1 --data.max_len 2048 "
        "--data.max_samples 100000 --ds.zero_stage 3 --ds.param_dtype bf16 --actor.adam.lr 5e-7 --critic.adam.lr 9e-6 "
        "--algo.kl.init_coef 0.01 --data.prompt_dataset OpenRLHF/prompt-collection-v0.1 --data.input_key "
        "context_messages --data.apply_chat_template --reward.normalize_enable --actor.gradient_checkpointing_enable "
        "--ds.packing_samples --vllm.sync_backend nccl --vllm.enforce_eager --vllm.enable_sleep --ds.enable_sleep "
        "--train.dynamic_batch_enable --train.max_tokens_per_gpu 16384 --algo.advantage.is_correction_enable"
    )
    config = load_config(PPOConfig, None, shlex.split(line))
    got = {
        k: getattr(config, k)
        for k in ("learning_rate", "value_learning_rate", "kl_coef", "per_device_train_batch_size")
    }
    assert got == {
        "learning_rate": 5e-7,
        "value_learning_rate": 9e-6,
        "kl_coef": 0.01,
        "per_device_train_batch_size": 1024,
    }
    assert [(r.kind, r.model, r.normalize) for r in config.rewards] == [("reward_model", "rm", True)]
    assert (config.mini_batch_size, config.num_ppo_epochs, config.data_fields) == (
        128,
        1,
        {"prompt": "context_messages"},
    )
    with pytest.raises(ConfigError, match="estimator 'gae' is alignkit ppo: run it with alignkit ppo"):
        load_config(GRPOConfig, None, ["--data.prompt_dataset", "p", "--algo.advantage.estimator", "gae"])
    with pytest.raises(ConfigError, match="algo.kl.use_loss True: alignkit rloo puts the KL penalty in the reward"):
        load_config(RLOOConfig, None, ["--data.prompt_dataset", "p", "--algo.kl.use_loss"])
    with pytest.raises(ConfigError, match="estimator 'reinforce_baseline': alignkit trains gae"):
        load_config(
            RLOOConfig, None, ["--data.prompt_dataset", "p", "--algo.advantage.estimator", "reinforce_baseline"]
        )


def test_openrlhfs_input_template_formats_plain_prompts_without_the_chat_template(tmp_path):
    """OpenRLHF's SFT README line: ``--data.input_template $'User: {}\\nAssistant: '`` without
    ``--data.apply_chat_template`` puts each prompt in the template; with it, the chat template wins;
    a conversation cannot be put in a template."""
    from alignkit.data.methods import data_loader
    from alignkit.data.records import load_train_eval

    rows = tmp_path / "qa.jsonl"
    rows.write_text(json.dumps({"question": "What is 2 + 3?", "response": "5."}) + "\n")
    line = [
        "--data.dataset",
        str(rows),
        "--data.input_key",
        "question",
        "--data.output_key",
        "response",
        "--eval_split",
        "0",
    ]
    config = load_config(SFTConfig, None, [*line, "--data.input_template", "User: {}\nAssistant: "])
    assert (config.prompt_template, config.apply_chat_template) == ("User: {}\nAssistant: ", False)
    (example,), _ = load_train_eval(config, data_loader("sft"))
    assert (example.prompt, example.completion) == ("User: What is 2 + 3?\nAssistant: ", "5.")
    chat = load_config(SFTConfig, None, [*line, "--data.input_template", "User: {}", "--data.apply_chat_template"])
    assert (chat.prompt_template, chat.apply_chat_template) == (None, True)
    rows.write_text(json.dumps({"question": [{"role": "user", "content": "Hi"}], "response": "Hello."}) + "\n")
    with pytest.raises(AlignkitError, match="qa.jsonl:1: prompt_template formats plain-text prompts"):
        load_train_eval(config, data_loader("sft"))
    with pytest.raises(ConfigError, match="prompt_template needs {} where the prompt goes"):
        load_config(
            SFTConfig, None, ["--train_data", "d.jsonl", "--prompt_template", "User:", "--apply_chat_template", "false"]
        )
