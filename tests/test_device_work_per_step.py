"""What a GPU step costs, counted on this CPU (issue 27, items 1-3).

Host reads: on a GPU the shared training loop reads the device once per logging step, not once per
step. Every read of a tensor's value on the host (``.item()``, ``float()``, ``bool()``, ``.tolist()``) is
counted per optimizer step, with the GPU's way of stepping turned on (gradient norms and the skip of a
non-finite update left on the device, see ``defers_host_reads``). Reads of integer tensors are the
batch's layout, which collation keeps on the host (``HOST_KEYS``); a loss, a metric or a gradient norm is
a float, and on a GPU reading one waits for the whole step.

Device work: on a GPU a step is launch-bound when its kernel count grows with the batch's number of
sequences (as the per-segment attention loop did: 10,500 attention calls in 8 steps). Every operation
a step dispatches after its batch is on the device (forward, backward, optimizer) is counted, on the
path a GPU takes under bf16: one varlen attention call per layer (a stand-in for FlashAttention's)."""

import json

import pytest
import torch
from conftest import tiny_run_args, write_pairs
from torch.utils._python_dispatch import TorchDispatchMode

from alignkit.configs import DPOConfig, KTOConfig, ORPOConfig, RewardConfig, SFTConfig, load_config

LOGGING_STEPS, STEPS = 3, 7


class HostReads(TorchDispatchMode):
    """Counts host reads of float/bool tensors between :meth:`TrainingSession.end_of_step` calls, from the
    first step on (set-up reads, such as the reference precompute's, are not per step)."""

    def __init__(self):
        super().__init__()
        self.per_step: list[list[str]] = []
        self.counting = False

    def read(self, tensor: torch.Tensor, how: str) -> None:
        if self.counting and (tensor.is_floating_point() or tensor.dtype == torch.bool):
            self.per_step[-1].append(f"{how} of a {tuple(tensor.shape)} {tensor.dtype}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:  # .item(), float(), int(), bool()
            self.read(args[0], "a scalar read")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads(monkeypatch, deferred_reads):
    from alignkit.engine import logprobs
    from alignkit.train.metrics_log import Throughput
    from alignkit.train.session import TrainingSession

    reads = HostReads()
    # FlexAttention refuses to run under a dispatch mode; the CPU trains with the loop kernel anyway
    monkeypatch.setattr(logprobs, "kernels_to_check", lambda device: ("loop",))
    tolist, begin_step, end_of_step = torch.Tensor.tolist, Throughput.begin_step, TrainingSession.end_of_step

    def counted_tolist(self):
        reads.read(self, "tolist")
        return tolist(self)

    def begin(self):
        if not reads.counting:
            reads.counting = True
            reads.per_step.append([])
        begin_step(self)

    def end(self):
        end_of_step(self)
        reads.per_step.append([])

    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    monkeypatch.setattr(Throughput, "begin_step", begin)
    monkeypatch.setattr(TrainingSession, "end_of_step", end)
    with reads:
        yield reads


def sft_rows(path):
    rows = [{"prompt": f"What is {a} + 1?", "completion": f"{a + 1}."} for a in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TRAINERS = {
    "dpo-lora-live": (DPOConfig, "dpo", ("--use_peft", "--lora_r", "4", "--precompute_ref_log_probs", "false")),
    "dpo-full-precomputed": (DPOConfig, "dpo", ("--precompute_ref_log_probs", "true")),
    "kto": (KTOConfig, "kto", ("--per_device_train_batch_size", "4")),
    "orpo": (ORPOConfig, "orpo", ()),
    "reward": (RewardConfig, "reward", ()),
    "sft-packing": (SFTConfig, "sft", ("--packing",)),
}


def run(trainer: str, model_dir, out, *extra: str) -> None:
    """``trainer`` for STEPS steps on the tiny model, logging every LOGGING_STEPS."""
    from alignkit.train import dpo, kto, orpo, reward, sft

    config_class, module, settings = TRAINERS[trainer]
    data = sft_rows(out.parent / "sft.jsonl") if module == "sft" else write_pairs(out.parent / "pairs.jsonl", 24)
    args = tiny_run_args(model_dir, data, out, "--max_steps", str(STEPS), *settings, *extra, eval_split="0")
    args += ["--logging_steps", str(LOGGING_STEPS), "--save_steps", "100"]
    train = getattr({"dpo": dpo, "kto": kto, "orpo": orpo, "reward": reward, "sft": sft}[module], f"train_{module}")
    train(load_config(config_class, None, args))


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_the_device_is_read_once_per_logging_step(trainer, host_reads, tiny_model_dir, tmp_path):
    run(trainer, tiny_model_dir, tmp_path / "run")
    per_step = host_reads.per_step[:STEPS]
    assert len(per_step) == STEPS and all(isinstance(r, list) for r in per_step)
    for step, reads in enumerate(per_step, start=1):
        if step % LOGGING_STEPS and step != STEPS:
            assert reads == [], f"step {step} is no logging step, yet the device was read: {reads}"
        else:  # the window's gradient norms (which waits for the step), then its summed metrics
            assert len(reads) == 2, f"logging step {step}: {reads}"


def float_reads_per_step(reads: HostReads, steps: int) -> list[int]:
    return [sum("bool" not in read for read in step) for step in reads.per_step[:steps]]


def test_an_rl_update_reads_nothing(host_reads, tiny_model_dir, tmp_path):
    """An RL step samples (each new token's stop check is a read, as in every sampler) and then runs its
    updates: those read nothing, so a step with four updates reads what a step with one does."""
    from conftest import write_prompts
    from test_rl import rl_args

    from alignkit.configs import GRPOConfig
    from alignkit.train.grpo import train_grpo

    prompts = write_prompts(tmp_path / "prompts.jsonl")
    counts = {}
    # 4 prompts x 2 completions: one minibatch of 8 once, or two of 4 twice
    for updates, (mini_batch, epochs) in {1: ("8", "1"), 4: ("4", "2")}.items():
        host_reads.per_step, host_reads.counting = [], False
        args = rl_args(tiny_model_dir, prompts, tmp_path / f"run-{updates}", "--num_generations", "2")
        args += ["--mini_batch_size", mini_batch, "--num_ppo_epochs", epochs, "--max_steps", "3", "--eval_split", "0"]
        train_grpo(load_config(GRPOConfig, None, args))
        counts[updates] = float_reads_per_step(host_reads, 3)
    assert counts[1] == counts[4], counts
    # steps 2 and 3 read their gradient norms, their updates' numbers and the step's metrics from the device,
    # and the rewards' mean and spread from the host
    assert counts[1][1:] == [5, 5], counts


class DeviceOps(TorchDispatchMode):
    """Counts the operations dispatched while ``counting`` (one attention call counts once, see
    :func:`one_call_varlen`), per step."""

    def __init__(self):
        super().__init__()
        self.per_step: list[int] = []
        self.counting = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.counting:
            self.per_step[-1] += 1
        return func(*args, **(kwargs or {}))


def one_call_varlen(ops: DeviceOps):
    """The varlen kernel as one operation each way, forward and backward, whatever the stand-in (one SDPA
    call per span) does inside."""
    from test_segment_attention import reference_varlen

    stand_in = reference_varlen([])

    def unseen(run):
        counting, ops.counting = ops.counting, False
        try:
            return run()
        finally:
            ops.counting = counting

    class VarlenCall(torch.autograd.Function):
        @staticmethod
        def forward(ctx, query, key, value, *layout):
            def run():
                with torch.enable_grad():
                    ctx.inputs = [t.detach().requires_grad_() for t in (query, key, value)]
                    ctx.out = stand_in(*ctx.inputs, *layout)
                return ctx.out.detach()

            return unseen(run)

        @staticmethod
        def backward(ctx, grad):
            grads = unseen(lambda: torch.autograd.grad(ctx.out, ctx.inputs, grad))
            return (*grads, *[None] * 5)

    return lambda *args: VarlenCall.apply(*args)


@pytest.fixture
def device_ops(monkeypatch):
    """Counts each step's operations from its batch's arrival on the device to its optimizer step, with
    every layer's attention forced through the varlen kernel."""
    from alignkit.engine import logprobs
    from alignkit.models import segment_attention, varlen_segments
    from alignkit.train import loop
    from alignkit.train.session import TrainingSession

    ops = DeviceOps()
    monkeypatch.setattr(logprobs, "kernels_to_check", lambda device: ("loop",))
    monkeypatch.setenv(segment_attention.KERNEL_VARIABLE, "varlen")
    monkeypatch.setattr(varlen_segments, "_KERNEL", [one_call_varlen(ops)])
    monkeypatch.setattr(varlen_segments, "usable", lambda query, dropout: True)
    to_device, optimizer_step = loop.to_device, TrainingSession.optimizer_step

    def arrived(batch, device):
        moved = to_device(batch, device)
        ops.per_step.append(0)
        ops.counting = True
        return moved

    def stepped(self, *args, **kwargs):
        result = optimizer_step(self, *args, **kwargs)
        ops.counting = False
        return result

    monkeypatch.setattr(loop, "to_device", arrived)
    monkeypatch.setattr(TrainingSession, "optimizer_step", stepped)
    with ops:
        yield ops


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_a_steps_device_work_does_not_grow_with_its_sequences(trainer, device_ops, tiny_model_dir, tmp_path):
    """Two and eight sequences (pairs, examples) per batch dispatch the same operations: nothing in the
    forward, the loss, the backward or the optimizer step runs once per sequence."""
    counts = {}
    for batch_size in (2, 8):
        device_ops.per_step = []
        run(trainer, tiny_model_dir, tmp_path / f"run-{batch_size}", "--per_device_train_batch_size", str(batch_size))
        counts[batch_size] = device_ops.per_step[:STEPS]
    assert counts[2] == counts[8] and len(counts[2]) == STEPS, counts


def test_evaluation_gives_example_weighted_means_and_reads_the_device_a_fixed_number_of_times():
    """7 eval items in batches of 3 (3, 3, 1): each batch's loss is its items' mean, so the example-weighted
    mean over batches is the mean over items, (0 + ... + 6) / 7 = 3; a per-batch mean of the means would
    give (1 + 4 + 6) / 3. The reads do not grow with the number of batches."""
    from types import SimpleNamespace

    from alignkit.train.loop import TrainingTask, evaluate

    def compute_loss(model, batch, training):
        values = batch["values"]
        return values.mean(), {"accuracy": (values > 2).float().mean(), "constant": 0.5}

    def reads_of(n_items):
        task = TrainingTask(
            model=torch.nn.Linear(1, 1),
            train_items=[],
            collate=lambda items: {"values": torch.tensor(items, dtype=torch.float)},
            compute_loss=compute_loss,
            eval_items=[float(i) for i in range(n_items)],
        )
        accelerator = SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"))
        reads = HostReads()
        tolist = torch.Tensor.tolist
        reads.counting, reads.per_step = True, [[]]
        torch.Tensor.tolist = lambda self: (reads.read(self, "tolist"), tolist(self))[1]
        try:
            with reads:
                means = evaluate(accelerator, task.model, task, batch_size=3)
        finally:
            torch.Tensor.tolist = tolist
        assert task.model.training  # back in training mode
        return means, len(reads.per_step[0])

    means, reads = reads_of(7)
    assert means == pytest.approx({"eval/loss": 3.0, "eval/accuracy": 4 / 7, "eval/constant": 0.5})
    assert reads_of(30)[1] == reads == 2  # the summed metrics, then the (reduced) totals
