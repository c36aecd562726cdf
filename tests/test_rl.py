"""RL on tiny models: per-token outputs against a naive computation, rollout sampling, reward terms,
the reward-hacking guard, and ppo/grpo/rloo end to end (CLI, outputs, learning, exact resume)."""

import json

import pytest
import torch
from conftest import build_model
from safetensors.torch import load_file

from alignkit.configs import RewardSpec
from alignkit.data.collate import build_packed_batch, build_sequence_batch
from alignkit.diagnose.symptoms import RewardHackingGuard
from alignkit.engine.generation import generate_responses, sample_token_ids
from alignkit.engine.token_outputs import token_outputs
from alignkit.judges.rewards import CombinedReward
from alignkit.train.metrics_log import read_metrics

SEQUENCES = [[5, 6, 7, 8, 9, 10], [5, 6, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27, 28], [30, 31]]
STARTS = [3, 2, 5, 1]


@pytest.mark.parametrize("packed", [True, False])
def test_token_outputs_match_a_naive_computation(packed):
    torch.manual_seed(0)
    model = build_model(64).eval()
    head = torch.nn.Linear(32, 1)
    batch = build_packed_batch(SEQUENCES, STARTS, 0) if packed else build_sequence_batch(SEQUENCES, STARTS, 0, "left")
    out = token_outputs(model, batch, chunk_size=3, value_head=head, with_entropy=True)
    assert out.mask.sum(1).tolist() == [len(s) - st for s, st in zip(SEQUENCES, STARTS)]
    with torch.no_grad():
        for i, (ids, start) in enumerate(zip(SEQUENCES, STARTS)):
            result = model(torch.tensor([ids]), output_hidden_states=True)
            logprobs = result.logits[0].float().log_softmax(-1)
            expected = [logprobs[p - 1, ids[p]].item() for p in range(start, len(ids))]
            n = len(expected)
            assert out.logps[i, :n].tolist() == pytest.approx(expected, abs=1e-5)
            assert out.logps[i, n:].abs().sum() == 0 and not out.mask[i, n:].any()
            hidden = result.hidden_states[-1][0]
            assert out.values[i, :n].tolist() == pytest.approx(
                head(hidden[start - 1 : len(ids) - 1]).squeeze(-1).tolist(), abs=1e-5
            )
            entropy = -(logprobs.exp() * logprobs).sum(-1)[start - 1 : len(ids) - 1]
            assert out.entropy[i, :n].tolist() == pytest.approx(entropy.tolist(), abs=1e-4)


def test_sampled_ids_stop_after_eos_and_greedy_matches_generation(tiny_tokenizer):
    from alignkit.data.tokenize import ensure_pad_token, prompt_token_ids

    ensure_pad_token(tiny_tokenizer)
    model = build_model(len(tiny_tokenizer)).eval()
    prompts = ["What is 2 + 3?", "hello world"]
    ids = [prompt_token_ids(tiny_tokenizer, p) for p in prompts]
    greedy = sample_token_ids(model, tiny_tokenizer, ids, max_new_tokens=6, temperature=0.0)
    texts = generate_responses(model, tiny_tokenizer, prompts, max_new_tokens=6, show_progress=False)
    assert [tiny_tokenizer.decode(r, skip_special_tokens=True).strip() for r in greedy] == texts
    torch.manual_seed(3)
    sampled = sample_token_ids(model, tiny_tokenizer, ids * 8, max_new_tokens=6, temperature=1.5)
    eos = tiny_tokenizer.eos_token_id
    for response in sampled:
        assert 1 <= len(response) <= 6
        assert eos not in response[:-1]  # nothing after the first EOS
        assert len(response) == 6 or response[-1] == eos


def test_combined_reward_weights_its_terms(tmp_path):
    fn = tmp_path / "mine.py"
    fn.write_text("def polite(row, response):\n    return 1.0 if 'please' in response else 0.0\n")
    reward = CombinedReward(
        [
            RewardSpec(kind="verifier"),
            RewardSpec(kind="length", weight=0.1),
            RewardSpec(kind="regex", pattern=r"=\s*\d+", weight=0.5),
            RewardSpec(kind="python", function=f"{fn}:polite", weight=2.0),
        ]
    )
    rows = [{"prompt": "What is 2 + 3?", "answer": 5}] * 2
    scores, components = reward(rows, ["2 + 3 = 5", "It is six, please"])
    assert components == {"verifier": [1.0, 0.0], "length": [-5.0, -4.0], "regex2": [1.0, 0.0], "python3": [0.0, 1.0]}
    assert scores == pytest.approx([1.0 - 0.5 + 0.5, -0.4 + 2.0])
    with pytest.raises(ValueError, match="needs 'pattern'"):
        RewardSpec(kind="regex")


def test_an_openrlhf_reward_func_scores_a_batch_of_formatted_queries(tmp_path, tiny_tokenizer):
    """OpenRLHF's reward_func(queries, prompts, labels) (its --reward.remote_url reward_func.py): one call
    per batch, each query the chat-templated prompt followed by the response, labels the rows' label."""
    from alignkit.configs import PPOConfig, load_config

    fn = tmp_path / "reward_func.py"
    fn.write_text(
        "import torch\nSEEN = []\n"
        "def reward_func(queries, prompts, labels):\n"
        "    SEEN.append((queries, prompts, labels))\n"
        "    return {'rewards': torch.tensor([float(q.endswith(l)) for q, l in zip(queries, labels)])}\n"
    )
    reward = CombinedReward(
        [RewardSpec(kind="reward_func", function=f"{fn}:reward_func", weight=2.0)], None, tiny_tokenizer
    )
    rows = [{"prompt": "What is 2 + 3?", "label": "5"}, {"prompt": "What is 2 + 2?", "label": "4"}]
    scores, components = reward(rows, ["It is 5", "It is 5"])
    assert (scores, components) == ([2.0, 0.0], {"reward_func0": [1.0, 0.0]})
    (queries, prompts, labels), *_ = reward.terms[0][2].fn.__globals__["SEEN"]
    assert prompts[0] == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    assert (queries[0], labels) == (prompts[0] + "It is 5", ["5", "4"])
    line = ["--data.prompt_dataset", "p.jsonl", "--data.label_key", "answer", "--reward.remote_url", str(fn)]
    config = load_config(PPOConfig, None, line)
    assert [(r.kind, r.function) for r in config.rewards] == [("reward_func", f"{fn}:reward_func")]
    assert config.data_fields == {"label": "answer"}
    with pytest.raises(Exception, match="a remote reward server is not called"):
        load_config(PPOConfig, None, [*line[:-1], "http://host:5000/get_reward"])
    with pytest.raises(Exception, match="rewards = \\[\\] \\(command line\\): List should have at least 1 item"):
        load_config(PPOConfig, None, ["--train_data", "p.jsonl", "--rewards", "[]"])  # every reward 0: refused


def guard_record(score, kl, length, truncated=0.0):
    return {"reward/score": score, "objective/kl": kl, "response_length": length, "truncated_fraction": truncated}


def test_reward_hacking_guard():
    guard = RewardHackingGuard(kl_threshold=10.0, length_factor=2.0)
    assert guard.observe(1, guard_record(0.1, 1.0, 20)) == []  # the baseline
    assert guard.observe(2, guard_record(0.5, 5.0, 25)) == []  # healthy: reward up, KL bounded
    fired = guard.observe(3, guard_record(0.6, 12.0, 30))
    assert [s.name for s in fired] == ["reward_hacking_kl"] and "12.00 nats" in fired[0].message
    assert guard.observe(4, guard_record(0.7, 15.0, 30)) == []  # once
    assert [s.name for s in guard.observe(5, guard_record(0.7, 1.0, 41))] == ["length_runaway"]
    other = RewardHackingGuard(10.0, 2.0)
    other.observe(1, guard_record(0.0, 0.0, 20, truncated=0.4))
    assert (
        other.observe(2, guard_record(-0.1, 12.0, 20, truncated=0.8)) == []
    )  # KL high but reward did not rise; truncation noisy, not runaway
    assert [s.name for s in other.observe(3, guard_record(0.0, 0.0, 20, truncated=0.9))] == ["length_runaway"]
    # a log without rewards (an eval or a timing line) is skipped; exactly length_factor x is not yet runaway
    resumed = RewardHackingGuard(10.0, 2.0)
    assert resumed.observe(1, {"eval/loss": 0.3}) == [] and resumed.first is None
    resumed.observe(2, guard_record(0.1, 1.0, 20))
    assert resumed.observe(3, guard_record(0.1, 1.0, 40)) == []
    # a resumed run replays its reports: a symptom already reported is not reported again
    assert resumed.observe(4, {"symptom": "reward_hacking_kl", "message": "m", "advice": "a"}) == []
    assert resumed.observe(5, guard_record(0.6, 12.0, 20)) == []


def rl_args(model_dir, prompts, out, *extra):
    return [
        "--model",
        str(model_dir),
        "--train_data",
        str(prompts),
        "--output_dir",
        str(out),
        "--disable_tqdm",
        "--report_to",
        "none",
        "--max_new_tokens",
        "6",
        "--per_device_train_batch_size",
        "4",
        "--mini_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--eval_split",
        "0.25",
        "--learning_rate",
        "1e-3",
        "--rewards",
        "[{kind: verifier}, {kind: length, weight: 0.1}]",
        *extra,
    ]


@pytest.mark.parametrize(
    "command,keys",
    [
        (
            "ppo",
            {
                "loss/policy",
                "loss/value",
                "policy/clipfrac",
                "value/clipfrac",
                "policy/approx_kl",
                "returns/mean",
                "advantages/std",
                "values/mean",
            },
        ),
        ("grpo", {"policy/clipfrac", "policy/k3_kl", "advantages/abs_mean"}),
        ("rloo", {"policy/clipfrac", "rewards/with_kl_penalty"}),
    ],
)
def test_each_command_runs_from_the_cli(command, keys, tiny_model_dir, prompts, tmp_path):
    """Two steps each; RLOO's as two epochs of one step (torchtune's max_steps_per_epoch)."""
    from alignkit.cli import main

    out = tmp_path / command
    steps = ["--num_train_epochs", "2", "--max_steps_per_epoch", "1"] if command == "rloo" else ["--max_steps", "2"]
    if command == "ppo":  # the value head at its own rate (OpenRLHF's critic learning rate)
        steps += ["--value_learning_rate", "5e-3"]
    assert (
        main([command, *rl_args(tiny_model_dir, prompts, out, *steps, "--eval_on_start", "--sample_every", "1")]) == 0
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "reward/score" in r]
    assert [r["step"] for r in train] == [1, 2]
    assert [r["epoch"] for r in train] == ([1.0, 2.0] if command == "rloo" else [0.3333, 0.6667])  # 3 steps an epoch
    common = {
        "reward/score",
        "reward/verifier",
        "reward/length",
        "objective/kl",
        "objective/entropy",
        "objective/kl_coef",
        "response_length",
        "truncated_fraction",
        "learning_rate",
        "grad_norm",
    }
    assert common | keys <= set(train[0])
    assert [r["step"] for r in records if "eval/reward/score" in r] == [0, 2]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all({"prompt", "response", "score"} <= set(s) for s in samples)
    assert (out / "final" / "config.json").is_file() and (out / "checkpoint-2").is_dir()
    assert (out / "final" / "value_head.safetensors").is_file() == (command == "ppo")
    groups = torch.load(out / "checkpoint-2" / "optimizer.pt", weights_only=False)["param_groups"]
    sizes = [len(group["params"]) for group in groups]
    if command == "ppo":  # the head's weight and bias in a group of their own, scheduled alike at 5x the rate
        assert sizes[1] == 2 and groups[1]["lr"] == pytest.approx(5 * groups[0]["lr"])
    else:
        assert len(groups) == 1


def test_grpo_learns_a_length_reward(tiny_model_dir, prompts, tmp_path):
    """Reward = -words: GRPO must make sampled answers shorter within a few steps."""
    from alignkit.configs import GRPOConfig, load_config
    from alignkit.train.grpo import train_grpo

    args = rl_args(
        tiny_model_dir,
        prompts,
        tmp_path / "g",
        "--max_steps",
        "12",
        "--eval_on_start",
        "--rewards",
        "[{kind: length}]",
        "--max_new_tokens",
        "8",
        "--learning_rate",
        "1e-2",
        "--temperature",
        "1.0",
        "--num_generations",
        "4",
        "--mini_batch_size",
        "16",
        "--lr_scheduler_type",
        "constant",
        "--warmup_ratio",
        "0",
    )
    result = train_grpo(load_config(GRPOConfig, None, args))
    scores = [
        json.loads(line)["reward/score"]
        for line in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()
        if '"reward/score"' in line
    ]
    assert len(scores) == result.global_step == 12
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.3


def test_ppo_resume_reaches_exactly_the_uninterrupted_run(tiny_model_dir, prompts, tmp_path, monkeypatch):
    from alignkit.configs import PPOConfig, load_config
    from alignkit.train import rl_loop
    from alignkit.train.ppo import train_ppo

    extra = [
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--use_peft",
        "--lora_r",
        "4",
        "--adaptive_kl",
        "--eval_steps",
        "2",
    ]
    train_ppo(load_config(PPOConfig, None, rl_args(tiny_model_dir, prompts, tmp_path / "straight", *extra)))
    real, calls = rl_loop.sample_rollouts, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(rl_loop, "sample_rollouts", crashing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_ppo(load_config(PPOConfig, None, rl_args(tiny_model_dir, prompts, tmp_path / "resumed", *extra)))
    train_ppo(load_config(PPOConfig, None, rl_args(tiny_model_dir, prompts, tmp_path / "resumed", *extra, "--resume")))
    assert read_metrics(tmp_path / "straight", timings=False) == read_metrics(tmp_path / "resumed", timings=False)
    assert (tmp_path / "straight" / "samples.jsonl").read_text() == (tmp_path / "resumed" / "samples.jsonl").read_text()
    a = load_file(str(tmp_path / "straight" / "checkpoint-4" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint-4" / "trainable.safetensors"))
    assert a.keys() == b.keys() and any("value_head" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)


def test_token_outputs_at_the_sampling_temperature():
    torch.manual_seed(0)
    model = build_model(64).eval()
    batch = build_packed_batch(SEQUENCES, STARTS, 0)
    out = token_outputs(model, batch, temperature=0.5)
    with torch.no_grad():
        ids, start = SEQUENCES[0], STARTS[0]
        logprobs = (model(torch.tensor([ids])).logits[0].float() / 0.5).log_softmax(-1)
        assert out.logps[0, : len(ids) - start].tolist() == pytest.approx(
            [logprobs[p - 1, ids[p]].item() for p in range(start, len(ids))], abs=1e-5
        )
