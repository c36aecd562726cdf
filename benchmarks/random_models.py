"""Random-weight models of real shapes, built from a config, for the GPU checks and benchmarks.

A lent GPU machine has no package registry and the embedded GGUF is too big to travel there, so the
GPU scripts build their models here: timing, memory and the correctness checks (step-1 losses, KL at
step 0) do not depend on the weights' values. The tokenizer is SmolLM2's when a folder holding it is
given (``benchmarks/README.md`` says how to export it here and carry it there), else a small
byte-level BPE with a ChatML template trained in-process.
"""

from __future__ import annotations

from pathlib import Path

SHAPES = {
    # SmolLM2-135M-Instruct, the embedded model
    "135m": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3
    ),
    # Llama-3.2-1B's shape with SmolLM2's vocabulary (1.07B parameters)
    "1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8
    ),
    # a smoke test of the scripts themselves, on a CPU in seconds
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
}
VOCAB = 49152  # SmolLM2's
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(source: str | None = None):
    """SmolLM2's tokenizer from ``source`` (a folder), else a byte-level BPE trained on a few sentences."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if source:
        return AutoTokenizer.from_pretrained(source)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [
        "What is 2 + 3? 2 + 3 = 5. The answer is five. I'm not sure. Let me think about this step by step.",
        "The capital of France is Paris. Water boils at 100 degrees. Write a short poem about the sea.",
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<|endoftext|>"
    )
    fast.pad_token = "<|endoftext|>"
    fast.chat_template = CHATML
    return fast


def random_model(shape: str, tokenizer, seed: int = 0):
    """A random-weight Llama causal LM of ``shape`` (see ``SHAPES``) for ``tokenizer``, on the GPU if any."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = VOCAB if shape != "tiny" else len(tokenizer)
    config = LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)),
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        return LlamaForCausalLM(config)


def save_random_model(folder: Path, shape: str, tokenizer_source: str | None = None, seed: int = 0) -> Path:
    """:func:`random_model` and its tokenizer, saved with save_pretrained."""
    tokenizer = build_tokenizer(tokenizer_source)
    random_model(shape, tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def emit(text: str, out: str | None) -> None:
    """Print a result table, and write it to ``out`` (markdown) when given."""
    print(text)
    if out:
        Path(out).write_text(text + "\n")
