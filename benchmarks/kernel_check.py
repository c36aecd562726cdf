"""Segment attention's kernels side by side on this machine: same values, and which is fastest.

    python benchmarks/kernel_check.py --tokenizer .gpu/tokenizer --out $OUT/kernel_check.md   # a lent GPU
    python benchmarks/kernel_check.py --shape tiny --pairs 2                                  # on a CPU

One batch as the DPO trainer builds it (``--pairs`` pairs of a ``benchmarks/data`` regime in one row,
prompts shared by chosen and rejected), a random-weight model of ``--shape``, bf16 autocast on CUDA.
For every kernel this machine can run (``loop``: one SDPA call per sequence or block; ``flex``: one
FlexAttention call per layer; ``varlen``: one FlashAttention-2 varlen call per layer, CUDA only) it
prints the largest difference from the per-segment loop of the final hidden states and of the
gradients of a fixed random projection of them, and the mean seconds of a forward and backward
(after two warm-up passes, which hold FlexAttention's compilation). On a CPU FlexAttention has no
backward, so it is checked and timed forward only. On CUDA, compiled FlexAttention then runs a row of
one pair fewer, and the table gives the graphs ``torch.compile`` built for both lengths (1 expected: a
second one means it recompiles per batch). This is the measurement ``kernel_for`` follows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_bench import compiled_graphs  # noqa: E402
from random_models import SHAPES, build_tokenizer, emit, random_model  # noqa: E402


def one_row_batch(tokenizer, regime: Path, pairs: int):
    """The first ``pairs`` pairs of ``regime`` as the DPO trainer's one-row, shared-prompt batch."""
    from alignkit.data.collate import PreferenceCollator
    from alignkit.data.tokenize import TokenizedPair

    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rows = [json.loads(line) for line in regime.read_text().splitlines()[:pairs]]
    items = [{"pair": TokenizedPair(encode(r["prompt"]), encode(r["chosen"]), encode(r["rejected"]))} for r in rows]
    return PreferenceCollator(tokenizer.pad_token_id or 0, prefix_sharing=True, one_row=True)(items)


def measure(backbone, batch, kernel: str, projection, backward: bool, repeats: int, autocast) -> dict:
    """One kernel's hidden states, gradients (when ``backward``) and mean seconds per pass."""
    import torch

    from alignkit.engine.logprobs import last_hidden_states
    from alignkit.models.segment_attention import forced_kernel

    def run():
        backbone.zero_grad(set_to_none=True)
        with forced_kernel(kernel), autocast(), torch.set_grad_enabled(backward):
            hidden = last_hidden_states(backbone, batch)[0].float()
        if backward:
            (hidden * projection).sum().backward()
        return hidden

    for _ in range(2):
        run()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        hidden = run()
    sync()
    seconds = (time.perf_counter() - started) / repeats
    grads = [p.grad.float().clone() for p in backbone.parameters()] if backward else []
    return {"hidden": hidden.detach(), "grads": grads, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1b", choices=list(SHAPES))
    parser.add_argument("--tokenizer", default=None, help="a folder with SmolLM2's tokenizer (else a small BPE)")
    parser.add_argument("--regime", default="similar_pairs.jsonl", help="a file of benchmarks/data")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    from alignkit.data.collate import to_device
    from alignkit.engine.logprobs import backbone_of
    from alignkit.models.segment_attention import SEGMENT_ATTENTION, available_kernels, set_attention

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tokenizer = build_tokenizer(args.tokenizer)
    model = random_model(args.shape, tokenizer)  # the model gpu_bench.py and gpu_check.py train
    set_attention(model, SEGMENT_ATTENTION)
    backbone = backbone_of(model)
    batch = to_device(one_row_batch(tokenizer, HERE / "data" / args.regime, args.pairs), device)
    tokens = batch["input_ids"].shape[1]
    projection = torch.randn(tokens, model.config.hidden_size, device=device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    results = {}
    for kernel in available_kernels(device):
        backward = cuda or kernel != "flex"
        try:
            results[kernel] = measure(backbone, batch, kernel, projection, backward, args.repeats, autocast)
        except Exception as exc:  # noqa: BLE001 -- report a kernel that cannot run here, keep the others
            results[kernel] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
        if kernel == "flex" and cuda and "error" not in results[kernel]:  # compiled: does a new row length recompile?
            shorter = to_device(one_row_batch(tokenizer, HERE / "data" / args.regime, max(1, args.pairs - 1)), device)
            try:
                measure(backbone, shorter, kernel, projection[: shorter["input_ids"].shape[1]], backward, 1, autocast)
                results[kernel]["graphs"] = compiled_graphs()
            except Exception as exc:  # noqa: BLE001 -- reported in the table, the other kernels still run
                results[kernel]["graphs"] = f"{type(exc).__name__} on a second row length"
        print(kernel, {k: v for k, v in results[kernel].items() if k in ("seconds", "error", "graphs")}, flush=True)
    loop = results["loop"]
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    lines = [
        f"Segment attention kernels: {name}, torch {torch.__version__}, shape {args.shape}, "
        f"{'bf16 autocast' if cuda else 'fp32'}, {args.pairs} pairs of {args.regime} in one row of {tokens} tokens "
        f"({len(batch['segments'])} blocks), {time.strftime('%Y-%m-%d')}",
        "",
        "| kernel | passes | s per pass | max diff hidden vs loop | max diff grad vs loop | graphs, 2 row lengths |",
        "|---|---|---|---|---|---|",
    ]
    for kernel, r in results.items():
        if "error" in r:
            lines.append(f"| {kernel} | {r['error']} | | | | |")
            continue
        hidden = (r["hidden"] - loop["hidden"]).abs().max().item() if "hidden" in loop else None
        grad = max(((a - b).abs().max().item() for a, b in zip(r["grads"], loop.get("grads", []))), default=None)
        passes = "forward + backward" if r["grads"] else "forward"
        fmt = lambda v: "" if v is None else f"{v:.2e}"  # noqa: E731
        graphs = r.get("graphs", "")  # FlexAttention's: 1 per grad mode; more means a recompile per row length
        lines.append(f"| {kernel} | {passes} | {r['seconds']:.4f} | {fmt(hidden)} | {fmt(grad)} | {graphs} |")
    text = "\n".join(lines)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
