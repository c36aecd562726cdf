"""Fixtures: a tiny randomly initialised Llama and a tiny byte-level BPE tokenizer with a ChatML
template, built in-process (no downloads) and saved where the API/CLI can load them by path."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from alignkit.train.backends import cpu_bf16_flags

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + "
    "'\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is 2 + 3? 2 + 3 = 5. The answer is five.",
    "I'm not sure. I have no way of knowing that.",
    "Let me think about this at length, step by step, before answering the question.",
    "user assistant system hello world numbers 0 1 2 3 4 5 6 7 8 9 plus minus times",
]


def build_tokenizer(with_pad: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    if with_pad:
        fast.pad_token = "<|endoftext|>"
    return fast


def tiny_llama_config(vocab_size: int, **overrides):
    """The tiny Llama shape every test model uses (2 layers, hidden 32, 4 heads over 2 KV heads)."""
    from transformers import LlamaConfig

    shape = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return LlamaConfig(vocab_size=vocab_size, **shape, **overrides)


def build_model(vocab_size: int, seed: int = 0, tie: bool = True):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = tiny_llama_config(
        vocab_size,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        pad_token_id=None,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def build_reward_model(vocab_size: int, seed: int = 0):
    """A tiny randomly initialised reward model (one score per sequence, pad id 0), in eval mode."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(tiny_llama_config(vocab_size, num_labels=1, pad_token_id=0)).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    model = build_model(len(tiny_tokenizer))
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model(tiny_tokenizer):
    return build_model(len(tiny_tokenizer))


def write_pairs(path: Path, n: int = 12) -> Path:
    rows = []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        rows.append(
            {
                "prompt": f"What is {a} + {b}?",
                "chosen": f"{a} + {b} = {a + b}.",
                "rejected": f"Let me think about this at length, step by step: the answer is {a + b + 1}.",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs.jsonl")


def write_prompts(path: Path, n: int = 16) -> Path:
    """Verifiable arithmetic prompts for the RL commands: {"prompt", "answer"} rows."""
    path.write_text(
        "".join(json.dumps({"prompt": f"What is {a} + {a}?", "answer": 2 * a}) + "\n" for a in range(1, n + 1))
    )
    return path


@pytest.fixture
def prompts(tmp_path) -> Path:
    return write_prompts(tmp_path / "prompts.jsonl")


def tiny_run_args(model_dir, data, out, *extra: str, eval_split: str = "0.25") -> list[str]:
    """Command-line overrides of a short training run on the tiny model (``extra`` wins)."""
    return [
        *("--model", str(model_dir), "--train_data", str(data), "--output_dir", str(out)),
        *("--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--logging_steps", "1"),
        *("--preflight", "false", "--max_length", "64", "--max_prompt_length", "32", "--disable_tqdm"),
        *("--report_to", "none", "--eval_split", eval_split),
        *extra,
    ]


@pytest.fixture
def deferred_reads(monkeypatch):
    """The GPU's way on this CPU: gradient norms stay on the device, non-finite updates are skipped there
    (fused AdamW's found_inf) and read at logging steps only."""
    from alignkit.train.session import TrainingSession

    monkeypatch.setattr(
        TrainingSession, "defers_host_reads", property(lambda self: self.backend.can_defer(self.optimizer))
    )


@pytest.fixture(autouse=True, scope="session")
def alignkit_cache():
    """Every test (and every process it launches) caches in the tests' own folder, never the user's
    ``~/.cache/alignkit``: ``$ALIGNKIT_TEST_CACHE``, else ``~/.cache/alignkit-tests``. It persists between runs
    (the converted model and the demo's reference answers take minutes to make); every cache entry is keyed by
    content, and the tests of caching itself use a folder of their own."""
    before = os.environ.get("ALIGNKIT_CACHE")
    path = Path(os.environ.get("ALIGNKIT_TEST_CACHE") or Path.home() / ".cache" / "alignkit-tests")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["ALIGNKIT_CACHE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("ALIGNKIT_CACHE", None)
    else:
        os.environ["ALIGNKIT_CACHE"] = before


NO_BF16 = "this CPU has no native bf16"
needs_bf16 = pytest.mark.skipif(not cpu_bf16_flags(), reason=NO_BF16)


def cpu_lacks_bf16(cpuinfo: str) -> bool:
    """Read from /proc/cpuinfo's text independently of alignkit's reader: neither avx512_bf16 nor amx_bf16."""
    return not re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo)


def ci_skip_verdict(reason: str, ci: bool, cpuinfo: str) -> str:
    """What a skip becomes: "skip" outside CI; in CI (where .ci/run installs every extra and the browser)
    "fail", unless it is the bf16 skip on a CPU that truly lacks bf16 ("no-bf16": skipped, said once)."""
    if not ci:
        return "skip"
    if NO_BF16 in reason and cpu_lacks_bf16(cpuinfo):
        return "no-bf16"
    return "fail"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[-1])
    verdict = ci_skip_verdict(reason, os.environ.get("CI") == "true", _cpuinfo())
    if verdict == "fail":
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where this machine should run it: {reason}"
    elif verdict == "no-bf16":
        item.config.stash.setdefault(_NO_BF16_SKIPS, []).append(item.nodeid)


_NO_BF16_SKIPS = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, config):
    skipped = config.stash.get(_NO_BF16_SKIPS, [])
    if skipped:
        terminalreporter.write_line(
            f"alignkit: {len(skipped)} bf16 tests skipped: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 "
            "in /proc/cpuinfo)"
        )
