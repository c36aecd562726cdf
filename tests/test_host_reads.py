"""Issue 27, item 2, checked on this CPU: on a GPU the shared training loop reads the device once per
logging step, not once per step. Every read of a tensor's value on the host (``.item()``, ``float()``,
``bool()``, ``.tolist()``) is counted per optimizer step, with the GPU's way of stepping turned on
(gradient norms and the skip of a non-finite update left on the device, see ``defers_host_reads``).

Reads of integer tensors are the batch's layout, which collation keeps on the host (``HOST_KEYS``);
a loss, a metric or a gradient norm is a float, and on a GPU reading one waits for the whole step."""

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
    monkeypatch.setattr(logprobs, "available_kernels", lambda device: ("loop",))
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


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_the_device_is_read_once_per_logging_step(trainer, host_reads, tiny_model_dir, tmp_path):
    from alignkit.train import dpo, kto, orpo, reward, sft

    config_class, module, extra = TRAINERS[trainer]
    data = sft_rows(tmp_path / "sft.jsonl") if module == "sft" else write_pairs(tmp_path / "pairs.jsonl", 24)
    args = tiny_run_args(tiny_model_dir, data, tmp_path / "run", "--max_steps", str(STEPS), *extra, eval_split="0")
    args += ["--logging_steps", str(LOGGING_STEPS), "--save_steps", "100"]
    train = {"dpo": dpo.train_dpo, "kto": kto.train_kto, "orpo": orpo.train_orpo, "reward": reward.train_reward}
    train = {**train, "sft": sft.train_sft}[module]
    train(load_config(config_class, None, args))
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
