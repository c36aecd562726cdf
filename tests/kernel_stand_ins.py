"""A stand-in for FlexAttention on a CPU whose backward fails as compiled FlexAttention's can on a GPU with
too little shared memory (pytorch/pytorch#133254): its forward is the loop's, chosen as a GPU chooses (flex
until it fails). Installed in-process by tests/test_gpu_correctness.py (through pytest's monkeypatch) and
in launched processes by tests/test_distributed.py (``python kernel_stand_ins.py ARGS``: the alignkit
command with the stand-in)."""

import sys

import torch

SHARED_MEMORY = "RuntimeError: out of resource: shared memory, Required: 131074, Hardware limit: 101376"


class BackwardFails(torch.autograd.Function):
    """Passes its input through; its backward raises what compiled FlexAttention raises (and counts it)."""

    @staticmethod
    def forward(ctx, x, counts):
        ctx.counts = counts
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.counts["failures"] += 1
        raise RuntimeError(SHARED_MEMORY.removeprefix("RuntimeError: "))


def install_flex_stand_in(set_attribute=setattr, backward_fails: bool = True) -> dict:
    """Put the stand-in in FlexAttention's place with ``set_attribute`` (``monkeypatch.setattr`` in a test);
    returns the count of its calls and of its failures."""
    from alignkit.models import segment_attention
    from alignkit.models.segment_attention import SegmentPlan, forced_kernel, segment_attention_forward

    counts = {"calls": 0, "failures": 0}

    def flex(query, key, value, plan, scaling, gqa):
        counts["calls"] += 1
        with forced_kernel("loop"):
            out, _ = segment_attention_forward(None, query, key, value, None, 0.0, scaling, segments=plan)
        return BackwardFails.apply(out.transpose(1, 2), counts) if backward_fails else out.transpose(1, 2)

    def kernel_for(query, dropout):  # a GPU's choice: flex until it fails (a forced kernel still wins)
        forced = segment_attention._forced
        return forced[-1] if forced else "loop" if "flex" in segment_attention._failed else "flex"

    set_attribute(SegmentPlan, "block_mask", lambda plan, n, device: plan)  # the stand-in gets the plan
    set_attribute(segment_attention, "flex_segment_attention", flex)
    set_attribute(segment_attention, "_failed", {})
    set_attribute(segment_attention, "kernel_for", kernel_for)
    return counts


if __name__ == "__main__":
    from alignkit.cli import main

    install_flex_stand_in()
    raise SystemExit(main(sys.argv[1:]))
