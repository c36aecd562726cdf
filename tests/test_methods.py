"""SFT, reward model + score, KTO, ORPO and every DPO loss type end to end on a tiny random model."""

import json

import pytest
import torch
from conftest import tiny_run_args, write_pairs

from alignkit.cli import main
from alignkit.configs import (
    DPOConfig,
    KTOConfig,
    ORPOConfig,
    RewardConfig,
    SFTConfig,
    load_config,
)
from alignkit.data.kto import load_kto_data, tokenize_kto
from alignkit.data.sft import (
    conversation_tokens,
    load_sft_data,
    pack_examples,
    tokenize_sft,
)
from alignkit.errors import DataValidationError
from alignkit.train.dpo import train_dpo
from alignkit.train.kto import train_kto
from alignkit.train.metrics_log import read_metrics
from alignkit.train.orpo import train_orpo
from alignkit.train.reward import train_reward
from alignkit.train.sft import train_sft


def args_for(model_dir, data, out, *extra):
    return tiny_run_args(model_dir, data, out, *extra)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_losses(out):
    return [r["loss"] for r in read_metrics(out) if "loss" in r]


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "5."},
    {"role": "user", "content": "And 1 + 1?"},
    {"role": "assistant", "content": "2."},
]


def test_sft_mask_covers_exactly_the_assistant_turns(tiny_tokenizer):
    ids, mask = conversation_tokens(tiny_tokenizer, CONVERSATION)
    assert len(ids) == len(mask)
    trained = tiny_tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "5.<|im_end|>2.<|im_end|>"  # the answers and their end-of-turn tokens, nothing else
    assert tiny_tokenizer.decode(ids) == tiny_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_sft_data_forms_and_errors(tmp_path, tiny_tokenizer):
    good = write_jsonl(
        tmp_path / "sft.jsonl", [{"messages": CONVERSATION}, {"prompt": "What is 1 + 2?", "completion": "3."}]
    )
    examples = load_sft_data(str(good))
    items, dropped = tokenize_sft(examples, tiny_tokenizer, 64, 32)
    assert dropped == 0
    completion = items[1]
    assert tiny_tokenizer.decode([i for i, m in zip(completion["ids"], completion["mask"]) if m]) == "3.<|im_end|>"
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}]}, {"prompt": "q"}, {"messages": "text"}],
    )
    with pytest.raises(DataValidationError) as err:
        load_sft_data(str(bad))
    text = str(err.value)
    assert "bad.jsonl:1: field 'messages': has no assistant message" in text
    assert "bad.jsonl:2: field 'completion': missing" in text
    assert "bad.jsonl:3: field 'messages': expected a list" in text


def test_sft_text_rows_truncation_and_template_refusals(tmp_path, tiny_tokenizer):
    """Plain ``text`` rows train on every token after BOS; rows of none of the three forms, or empty text, are
    named; the prompt is rendered in the chat template unless told not to; a row cut to no trained token is
    dropped and counted; conversations need a prefix-consistent chat template."""
    from conftest import build_tokenizer

    from alignkit.data.sft import sft_rows
    from alignkit.errors import AlignkitError

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}, {"text": "  "}, ["a list"]])
    with pytest.raises(DataValidationError) as err:
        load_sft_data(str(bad))
    assert "bad.jsonl:1: expected an object with 'messages', with 'prompt' and 'completion', or with 'text'" in str(
        err.value
    )
    assert "bad.jsonl:2: field 'text': expected non-empty text, got '  '" in str(err.value)
    assert "bad.jsonl:3: expected an object" in str(err.value)
    rows = write_jsonl(
        tmp_path / "rows.jsonl", [{"text": "Plain prose."}, {"prompt": "What is 1 + 2?", "completion": "3."}]
    )
    text, qa = load_sft_data(str(rows))
    (item,), dropped = tokenize_sft([text], tiny_tokenizer, 64, None)
    start = tiny_tokenizer("", add_special_tokens=True)["input_ids"]
    assert dropped == 0 and item["mask"] == [0] * len(start) + [1] * (len(item["ids"]) - len(start))
    assert tiny_tokenizer.decode(item["ids"][len(start) :]) == "Plain prose." + tiny_tokenizer.eos_token
    (templated,), _ = tokenize_sft([qa], tiny_tokenizer, 64, None)
    (plain,), _ = tokenize_sft([qa], tiny_tokenizer, 64, None, apply_chat_template=False)
    prompt_of = lambda item: tiny_tokenizer.decode([i for i, m in zip(item["ids"], item["mask"]) if not m])  # noqa: E731
    assert prompt_of(templated) == tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 1 + 2?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt_of(plain) == "What is 1 + 2?"
    cut, dropped = tokenize_sft([qa, text], tiny_tokenizer, len(templated["ids"]) - 1, None)
    assert dropped == 0 and cut[0]["ids"] == templated["ids"][:-1] and cut[0]["mask"] == templated["mask"][:-1]
    prompt_ids = len(templated["ids"]) - sum(templated["mask"])
    assert tokenize_sft([qa], tiny_tokenizer, prompt_ids, None) == ([], 1)  # the answer cut away entirely
    assert tokenize_sft([qa], tiny_tokenizer, prompt_ids + 1, None)[1] == 0  # one answer token left: kept

    (chat,) = load_sft_data(str(write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])))
    rows = sft_rows([text, qa, chat], tiny_tokenizer, 64, None)
    chat_ids, chat_mask = conversation_tokens(tiny_tokenizer, CONVERSATION)
    assert rows.prompt_lengths == [len(start), prompt_ids, chat_mask.index(1)]  # untruncated, as the doctor reads them
    assert rows.total_lengths == [len(item["ids"]), len(templated["ids"]), len(chat_ids)]
    (kept,), _ = tokenize_sft([qa], tiny_tokenizer, 64, 4)  # max_prompt_length keeps the prompt's end
    assert kept["ids"][:4] == templated["ids"][prompt_ids - 4 : prompt_ids] and kept["mask"][:4] == [0] * 4

    own = build_tokenizer()  # not the session's, which other tests share
    own.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ messages | length }}"
    with pytest.raises(AlignkitError, match="does not render conversations prefix-consistently"):
        conversation_tokens(own, CONVERSATION)
    own.chat_template = None
    with pytest.raises(AlignkitError, match="needs a tokenizer with a chat template"):
        conversation_tokens(own, CONVERSATION)


def test_sft_packing_bins_respect_max_length():
    items = [{"ids": [1] * n, "mask": [0] + [1] * (n - 1)} for n in (40, 30, 20, 10, 60)]
    bins = pack_examples(items, 64)
    # first-fit decreasing: 60 | 40 | 30 (new bins), 20 joins 40 (60/64), 10 joins 30
    assert sorted(sorted(len(s["ids"]) for s in b["sequences"]) for b in bins) == [[10, 30], [20, 40], [60]]


@pytest.mark.parametrize("packing", [False, True])
def test_sft_training_lowers_the_loss(tiny_model_dir, tmp_path, packing):
    rows = [{"messages": CONVERSATION}] + [
        {"prompt": f"What is {a} + 1?", "completion": f"{a + 1}."} for a in range(11)
    ]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    out = tmp_path / "run"
    extra = ["--max_steps", "12", "--learning_rate", "1e-2"] + (["--packing"] if packing else [])
    result = train_sft(load_config(SFTConfig, None, args_for(tiny_model_dir, data, out, *extra)))
    losses = train_losses(out)
    assert losses[-1] < losses[0] * 0.8
    assert "eval/loss" in result.eval_metrics and (out / "final" / "config.json").is_file()


def test_reward_model_trains_saves_and_scores_with_plain_transformers(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignkit.data.tokenize import reward_text

    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "rm"
    result = train_reward(
        load_config(
            RewardConfig, None, args_for(tiny_model_dir, pairs, out, "--max_steps", "16", "--learning_rate", "3e-3")
        )
    )
    records = read_metrics(out)
    assert {"loss", "accuracy", "margin"} <= set(records[0])
    assert result.eval_metrics["eval/accuracy"] == 1.0  # an easy, consistent preference on held-out pairs
    model = AutoModelForSequenceClassification.from_pretrained(out / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    text = reward_text(tokenizer, "What is 2 + 2?", "2 + 2 = 4.")
    with torch.no_grad():
        plain = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    scored_out = tmp_path / "scores.jsonl"
    data = write_jsonl(
        tmp_path / "one.jsonl",
        [{"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "Let me think about this at length."}],
    )
    assert main(["score", "--model", str(out / "final"), "--data", str(data), "--output", str(scored_out)]) == 0
    row = json.loads(scored_out.read_text())
    assert row["chosen_score"] == pytest.approx(
        plain, abs=1e-4
    )  # alignkit's engine reads the same token as transformers
    assert "pairwise accuracy 1.000" in capsys.readouterr().out
    assert (
        main(["score", "--model", str(out / "final"), "--data", str(data), "--output", str(scored_out)]) == 2
    )  # no silent overwrite


def test_kto_data_forms_and_errors(tmp_path, tiny_tokenizer):
    data = write_jsonl(
        tmp_path / "kto.jsonl",
        [
            {"prompt": "q1", "completion": "good", "label": True},
            {"prompt": "q2", "chosen": "yes", "rejected": "no"},
        ],
    )
    examples = load_kto_data(str(data))
    assert [(e.completion, e.desirable) for e in examples] == [("good", True), ("yes", True), ("no", False)]
    items = tokenize_kto(examples, tiny_tokenizer, 64, 32, seed=0)
    assert all(item["kl_completion"] != item["completion"] for item in items)  # each KL completion is another example's
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"prompt": "q", "completion": "a", "label": "yes"}, {"prompt": "q", "label": False}]
    )
    with pytest.raises(DataValidationError) as err:
        load_kto_data(str(bad))
    assert "bad.jsonl:1: field 'label': expected true" in str(
        err.value
    ) and "bad.jsonl:2: field 'completion': missing" in str(err.value)
    # labels as a CSV sheet, a 0/1 column or pandas' float column (an int column with gaps) write them
    sheet = tmp_path / "kto.csv"
    sheet.write_text("prompt,completion,label\nq,a,TRUE\nq,b,false\nq,c,1\nq,d,0\nq,e,1.0\nq,f,0.0\n")
    assert [e.desirable for e in load_kto_data(str(sheet))] == [True, False, True, False, True, False]
    labels = (1, 0, 2, 1.0, 0.0, float("nan"), 0.5, "yes")
    numbers = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "q", "completion": "c", "label": v} for v in labels])
    with pytest.raises(DataValidationError) as err:
        load_kto_data(str(numbers))
    assert [f.where.rsplit(":", 1)[1] for f in err.value.faults] == ["3", "6", "7", "8"]


def test_kto_kl_partners_lengths_and_batches(tmp_path, tiny_tokenizer):
    """Each row's KL completion is another row's, every completion serving once, in an order the seed
    shuffles; the lengths the doctor reads are the untruncated ones; one row has no partner and is refused; a
    row that is no object, or a pair with a fault, gives no example; the batch carries each row's label."""
    from alignkit.data.kto import KTOCollator, KTOExample, kto_rows

    examples = [KTOExample(f"Question {i}?", f"Answer number {i}.", i % 3 == 0, f"k.jsonl:{i}") for i in range(8)]
    completions = [tiny_tokenizer(e.completion, add_special_tokens=False)["input_ids"] for e in examples]

    def partners(seed):
        rows = kto_rows(examples, tiny_tokenizer, 256, None, seed=seed)
        return rows, [
            next(j for j, c in enumerate(completions) if item["kl_completion"][: len(c)] == c) for item in rows.items
        ]

    rows, first = partners(0)
    assert sorted(first) == list(range(8)) and all(j != i for i, j in enumerate(first))  # a derangement
    assert len({tuple(partners(seed)[1]) for seed in range(4)}) > 1 and partners(0)[1] == first
    rendered = [
        tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": e.prompt}], tokenize=False, add_generation_prompt=True
        )
        for e in examples
    ]
    prompts = [len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]
    assert rows.prompt_lengths == prompts
    assert rows.total_lengths == [p + len(c) + 1 for p, c in zip(prompts, completions)]  # the completion and EOS
    with pytest.raises(ValueError, match="KTO needs at least 2 examples"):
        tokenize_kto(examples[:1], tiny_tokenizer, 64, None)
    two = tokenize_kto(examples[:2], tiny_tokenizer, 64, None)  # two are enough: each is the other's partner
    assert [item["kl_completion"][:-1] for item in two] == [completions[1], completions[0]]
    batch = KTOCollator(0)(rows.items[:3])
    assert batch["desirable"].tolist() == [True, False, False]
    bad = write_jsonl(tmp_path / "bad.jsonl", [["q", "a", True], {"prompt": "q", "chosen": "", "rejected": "r"}])
    with pytest.raises(DataValidationError) as err:
        load_kto_data(str(bad))
    assert [f.where.rsplit(":", 1)[1] for f in err.value.faults] == ["1", "2"]
    assert "expected an object with prompt/completion/label, got list" in str(err.value)


def test_kto_first_step_is_one_half_and_desirable_reward_rises(tiny_model_dir, tmp_path):
    rows = []
    for i in range(12):
        rows.append({"prompt": f"What is {i} + 1?", "completion": f"{i + 1}.", "label": True})
        rows.append(
            {
                "prompt": f"What is {i} + 2?",
                "completion": "Let me think about this at length, step by step.",
                "label": False,
            }
        )
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    out = tmp_path / "kto"
    result = train_kto(
        load_config(
            KTOConfig,
            None,
            args_for(tiny_model_dir, data, out, "--max_steps", "10", "--per_device_train_batch_size", "4"),
        )
    )
    first = read_metrics(out)[0]
    assert first["loss"] == pytest.approx(0.5, abs=1e-5)  # policy == reference and KL 0: 1 - sigmoid(0)
    assert {"kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"} <= set(first)
    assert result.eval_metrics["eval/rewards/margins"] > 0


def test_orpo_trains_without_a_reference(tiny_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "orpo"
    train_orpo(load_config(ORPOConfig, None, args_for(tiny_model_dir, pairs, out, "--max_steps", "12")))
    records = [r for r in read_metrics(out) if "loss" in r]
    assert {"nll_loss", "log_odds_ratio", "log_odds_chosen", "rewards/accuracies"} <= set(records[0])
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["log_odds_chosen"] > records[0]["log_odds_chosen"]


@pytest.mark.parametrize(
    "loss_type, first_loss",
    [
        ("sigmoid", 0.6931472),  # log 2 at h = 0
        ("robust", 0.6931472),  # ((1 - e) log 2 - e log 2) / (1 - 2e) = log 2
        ("hinge", 1.0),  # max(0, 1 - 0)
        ("ipo", 25.0),  # (0 - 1 / (2 * 0.1))^2
    ],
)
def test_dpo_loss_types_first_step_and_learning(tiny_model_dir, pairs_file, tmp_path, loss_type, first_loss):
    out = tmp_path / loss_type
    train_dpo(
        load_config(
            DPOConfig,
            None,
            args_for(
                tiny_model_dir,
                pairs_file,
                out,
                "--max_steps",
                "6",
                "--loss_type",
                loss_type,
                "--label_smoothing",
                "0.1" if loss_type == "robust" else "0",
                "--learning_rate",
                "3e-3",
            ),
        )
    )
    assert train_losses(out)[0] == pytest.approx(first_loss, abs=1e-4)
    margins = [r["rewards/margins"] for r in read_metrics(out) if "rewards/margins" in r]
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and margins[-1] > 0.1  # the preference is learned


def test_simpo_and_rpo(tiny_model_dir, pairs_file, tmp_path):
    out = tmp_path / "simpo"
    train_dpo(
        load_config(
            DPOConfig,
            None,
            args_for(
                tiny_model_dir,
                pairs_file,
                out,
                "--max_steps",
                "6",
                "--loss_type",
                "simpo",
                "--beta",
                "2.0",
                "--rpo_alpha",
                "0.5",
            ),
        )
    )
    records = [r for r in read_metrics(out) if "loss" in r]
    first = records[0]
    # simpo + 0.5 x NLL: the NLL is the token mean, so the total exceeds the preference part alone
    assert first["nll_loss"] > 0 and first["loss"] > 0.5 * first["nll_loss"]
    assert records[-1]["rewards/margins"] > records[0]["rewards/margins"]


def test_a_lora_sft_output_is_a_valid_starting_model(tiny_model_dir, pairs_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from alignkit.models.loading import load_model_and_tokenizer

    sft_data = write_jsonl(
        tmp_path / "sft.jsonl", [{"prompt": f"What is {a} + 1?", "completion": f"{a + 1}."} for a in range(8)]
    )
    sft = tmp_path / "sft"
    train_sft(
        load_config(
            SFTConfig,
            None,
            args_for(
                tiny_model_dir,
                sft_data,
                sft,
                "--max_steps",
                "3",
                "--use_peft",
                "--lora_r",
                "4",
                "--learning_rate",
                "1e-2",
            ),
        )
    )
    assert (sft / "final" / "adapter_config.json").is_file()
    merged, _ = load_model_and_tokenizer(str(sft / "final"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(
        merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight
    )  # adapter merged in
    out = tmp_path / "dpo"
    train_dpo(load_config(DPOConfig, None, args_for(str(sft / "final"), pairs_file, out, "--max_steps", "1")))
    assert train_losses(out)[0] == pytest.approx(0.6931472, abs=1e-5)  # the reference is the SFT model itself


def test_an_adapter_trained_on_an_adapter_keeps_both(tiny_model_dir, pairs_file, tmp_path):
    """SFT adapter -> DPO adapter: the DPO adapter names the SFT folder as its base, so loading it
    merges both (loading it onto the bare base model would silently drop the SFT weights)."""
    import json as _json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignkit.models.loading import load_model_and_tokenizer

    sft_data = write_jsonl(
        tmp_path / "sft.jsonl", [{"prompt": f"What is {a} + 1?", "completion": f"{a + 1}."} for a in range(8)]
    )
    lora = ["--use_peft", "--lora_r", "4", "--learning_rate", "1e-2", "--max_steps", "2"]
    train_sft(load_config(SFTConfig, None, args_for(tiny_model_dir, sft_data, tmp_path / "sft", *lora)))
    train_dpo(
        load_config(DPOConfig, None, args_for(str(tmp_path / "sft" / "final"), pairs_file, tmp_path / "dpo", *lora))
    )
    recorded = _json.loads((tmp_path / "dpo" / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str((tmp_path / "sft" / "final").resolve())
    manual = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "sft" / "final")
    ).merge_and_unload()
    manual = PeftModel.from_pretrained(manual, str(tmp_path / "dpo" / "final")).merge_and_unload()
    loaded, _ = load_model_and_tokenizer(str(tmp_path / "dpo"))
    ids = torch.tensor([[5, 9, 14, 3, 27]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, manual(ids).logits, atol=1e-5)
