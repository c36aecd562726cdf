"""The one RL loop, shared by PPO, GRPO and RLOO.

Each step: take ``per_device_train_batch_size`` prompts (seeded order), sample
``num_generations`` completions of each from the policy, score them with the reward terms, compute
the old policy's and the reference's per-token log-probs (and values, for PPO) in one pass each,
let the method turn that into advantages, then run ``num_ppo_epochs`` passes of minibatch updates.
Held-out prompts are answered greedily and scored every ``eval_steps`` (and at the start with
``eval_on_start``, and at the end). Logging, checkpoints, symptom reports and exact resume work as
in the supervised loop: every step re-seeds sampling and minibatch order from (seed, step).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from alignkit.data.collate import build_batch, to_device
from alignkit.data.tokenize import prompt_token_ids
from alignkit.diagnose.symptoms import RewardHackingGuard
from alignkit.engine.generation import generate_responses, sample_token_ids
from alignkit.engine.token_outputs import TokenOutputs, token_outputs
from alignkit.log_files import truncate_after
from alignkit.losses.rl import kl_estimate, masked_mean
from alignkit.models.segment_attention import uses_segment_attention
from alignkit.train.loop import TrainingResult, epoch_order, host_floats
from alignkit.train.session import TrainingSession


@dataclass
class Rollouts:
    """One step's samples: each prompt's k completions, their texts, total rewards and each term's values."""

    rows: list[dict]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    texts: list[str]
    scores: torch.Tensor  # [N]
    components: dict[str, list[float]]


class RLMethod:
    """What a method supplies: advantages from a rollout batch, and the loss on a minibatch."""

    name = "rl"
    uses_value_head = False

    def prepare(
        self, config, rollouts: Rollouts, old: TokenOutputs, ref_logps: torch.Tensor, kl_coef: float
    ) -> tuple[dict, dict]:
        """The method's tensors for its loss (advantages, old log-probs ...) and stats (numbers or one-element
        device tensors, read with the step's other numbers), from a rollout batch."""
        raise NotImplementedError

    def loss(self, config, out: TokenOutputs, prepared: dict) -> tuple[torch.Tensor, dict]:
        """The method's loss on a minibatch's fresh outputs; returns (loss, stats)."""
        raise NotImplementedError

    def start(self, config, kl_coef: float | None = None) -> None:
        """The KL coefficient to use now (a resumed run passes the checkpoint's)."""
        self.kl_coef = config.kl_coef if kl_coef is None else kl_coef

    def after_step(self, mean_kl: float, n_sequences: int) -> None:
        """E.g. an adaptive KL controller's update of ``self.kl_coef``."""


class PolicyWithValue(torch.nn.Module):
    """The trained parts in one module (what the optimizer and checkpoints see): the policy LM
    (LoRA-wrapped or not) and, for PPO, a value head on its last hidden states."""

    def __init__(self, lm: torch.nn.Module, with_value_head: bool):
        super().__init__()
        self.lm = lm
        self.value_head = None
        if with_value_head:
            hidden = lm.config.hidden_size
            self.value_head = torch.nn.Linear(hidden, 1)
            torch.nn.init.normal_(self.value_head.weight, std=1 / math.sqrt(hidden + 1))
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(
        self, batch: dict, chunk_size: int, temperature: float, with_values: bool = True, with_entropy: bool = False
    ) -> TokenOutputs:
        """Per-token log-probs (and values, entropy) of the responses in ``batch``: what is prepared and
        called through ``accelerate``, so distributed wrappers see the whole computation."""
        return token_outputs(
            self.lm, batch, chunk_size, self.value_head if with_values else None, with_entropy, temperature
        )


def _subset(prepared: dict, index: torch.Tensor, width: int) -> dict:
    out = {}
    for key, value in prepared.items():
        picked = value.index_select(0, index)
        out[key] = picked[:, :width] if picked.dim() == 2 else picked
    return out


def run_rl(
    config,
    method: RLMethod,
    train_rows: list[dict],
    eval_rows: list[dict],
    run_dir: Path,
    policy: PolicyWithValue,
    tokenizer,
    reference,
    reward_fn: Callable,
    save_final: Callable[[Path], None],
) -> TrainingResult:
    """Train ``policy`` with ``method`` on prompt rows (see the module docstring); returns the policy LM,
    the last step, and the last train and eval metrics. The shared parts are a :class:`TrainingSession`."""
    session = TrainingSession(config, run_dir)
    batch_size, lm = config.per_device_train_batch_size, policy.lm
    updates_per_step = config.num_ppo_epochs * math.ceil(batch_size * config.num_generations / config.mini_batch_size)
    per_epoch = max(1, len(train_rows) // batch_size)
    epoch_steps = len(train_rows) / batch_size
    if config.max_steps_per_epoch:  # torchtune's cap: an epoch ends after this many steps
        per_epoch = epoch_steps = min(per_epoch, config.max_steps_per_epoch)
    total_steps = config.max_steps if config.max_steps > 0 else max(1, math.ceil(config.num_train_epochs * epoch_steps))
    guard = RewardHackingGuard(config.hacking_kl_threshold, config.length_runaway_factor)
    state = session.prepare(
        policy, total_steps, config.mini_batch_size, updates_per_step, monitor=guard, desc=method.name
    )
    model, policy, device = session.model, session.unwrapped, session.accelerator.device
    session.attach_reference(reference)  # the frozen copy (full fine-tuning) on the device, in the policy's autocast
    session.attach_rewards(reward_fn)  # reward models used as rewards, likewise
    autocast = session.accelerator.autocast  # sampling in the training's precision too
    if config.resume and session.accelerator.is_main_process:
        truncate_after(run_dir / "samples.jsonl", state.global_step)
    method.start(config, state.kl_coef)
    synced = session.backend.synced_generation

    def prompts_for(rows: list[dict]) -> list[list[int]]:
        return [
            prompt_token_ids(tokenizer, r["prompt"], config.apply_chat_template)[-config.max_prompt_length :]
            for r in rows
        ]

    def evaluate(step: int) -> dict:
        rows = eval_rows[: config.eval_max_prompts]
        with session.backend.generation_weights(policy), autocast():
            prompts = [r["prompt"] for r in rows]
            texts = generate_responses(
                lm,
                tokenizer,
                prompts,
                config.max_new_tokens,
                config.mini_batch_size,
                show_progress=False,
                synced=synced,
            )
        scores, components = reward_fn(rows, texts)
        metrics = {
            "eval/reward/score": sum(scores) / len(scores),
            **{f"eval/reward/{k}": sum(v) / len(v) for k, v in components.items()},
            "eval/response_words": sum(len(t.split()) for t in texts) / len(texts),
        }
        session.record(step, metrics)
        return metrics

    last_train, last_eval = {}, {}
    if config.eval_on_start and eval_rows and state.global_step == 0:
        last_eval = evaluate(0)
    with session:
        while state.global_step < total_steps:
            step = state.global_step
            session.throughput.begin_step()  # a step's time includes its sampling, as in every RL trainer
            torch.manual_seed(
                config.seed * 1_000_003 + step
            )  # sampling, dropout and minibatch order: a function of (seed, step)
            epoch, position = divmod(step, per_epoch)
            order = epoch_order(len(train_rows), config.seed, epoch)
            rows = [train_rows[i] for i in order[position * batch_size : (position + 1) * batch_size]]
            # 1. sample completions and score them
            with session.backend.generation_weights(policy), autocast():
                rollouts = sample_rollouts(config, lm, tokenizer, rows, prompts_for(rows), reward_fn, synced)
            batch = _batch(rollouts, tokenizer, config, device, lm)
            # 2. the old policy's and the reference's per-token log-probs (and values, for PPO), one pass each
            with torch.no_grad():  # dropout is off in RL (as in TRL), so these match the first update's forward exactly
                old = model(batch, config.logprob_chunk_size, config.temperature, with_entropy=True)
                with reference.model() as ref_model:  # with LoRA: the (prepared) policy with its adapters off
                    if reference.use_adapter:
                        ref_logps = model(batch, config.logprob_chunk_size, config.temperature, with_values=False).logps
                    else:
                        ref_logps = token_outputs(
                            ref_model.lm, batch, config.logprob_chunk_size, temperature=config.temperature
                        ).logps
            # 3. the method's advantages, then minibatch updates
            kl_coef = method.kl_coef
            prepared, stats = method.prepare(config, rollouts, old, ref_logps, kl_coef)
            update_stats = _optimise(config, method, session, rollouts, tokenizer, prepared, step)
            seq_kl = (kl_estimate(old.logps, ref_logps, "k1") * old.mask).sum(1)
            read = host_floats(  # the step's numbers from the device, in one read
                {
                    "objective/kl": seq_kl.mean(),
                    "objective/entropy": masked_mean(old.entropy, old.mask),
                    "response_length": old.mask.sum(1).float().mean(),
                    **stats,
                }
            )
            method.after_step(read["objective/kl"], len(rollouts.texts))
            session.throughput.end_step(len(rollouts.texts), int(batch["sequence_lengths"].sum()))
            state.global_step = step = step + 1
            state.kl_coef = method.kl_coef
            session.fractional_epoch = step / per_epoch
            session.bar.update(1)
            metrics = {
                "reward/score": rollouts.scores.mean().item(),
                "reward/score_std": rollouts.scores.std().item() if len(rollouts.scores) > 1 else 0.0,
                **{f"reward/{k}": sum(v) / len(v) for k, v in rollouts.components.items()},
                "objective/kl": read["objective/kl"],
                "objective/entropy": read["objective/entropy"],
                "objective/kl_coef": kl_coef,
                "response_length": read["response_length"],
                "truncated_fraction": sum(tokenizer.eos_token_id not in r for r in rollouts.response_ids)
                / len(rollouts.response_ids),
                **{key: read[key] for key in stats},
                **update_stats,
                "learning_rate": session.scheduler.get_last_lr()[0],
                "epoch": round(step / per_epoch, 4),
                "nonfinite_updates_skipped": state.nonfinite_skipped,
            }
            if step % config.logging_steps == 0 or step == total_steps or session.too_many_nonfinite:
                metrics.update(session.throughput.window())
                last_train = metrics
                session.log(step, metrics)
            if (step % config.sample_every == 0 or step == 1) and session.accelerator.is_main_process:
                _write_samples(run_dir, step, rollouts, config.samples_per_log)
            if session.too_many_nonfinite:
                session.stop_nonfinite(
                    lambda checkpoint: f"{session.in_a_row} updates in a row had a NaN/inf loss or gradient (up to "
                    f"step {step}); stopped and saved {checkpoint} (skipped updates change nothing). Lower the "
                    "learning rate or check the rewards, then --resume (with --force_resume if you changed the config)"
                )
            if eval_rows and ((config.eval_steps and step % config.eval_steps == 0) or step == total_steps):
                last_eval = evaluate(step)
            session.end_of_step()
    last_train = session.finish(save_final, last_train, last_eval)
    return TrainingResult(run_dir, lm, state.global_step, last_train, last_eval)


def sample_rollouts(
    config, lm, tokenizer, rows: list[dict], prompt_ids: list[list[int]], reward_fn, synced: bool = False
) -> Rollouts:
    """Sample ``num_generations`` completions of each prompt and score them with ``reward_fn``."""
    k = config.num_generations
    rows_k = [r for r in rows for _ in range(k)]  # each prompt's completions are contiguous (a group)
    prompts_k = [p for p in prompt_ids for _ in range(k)]
    responses = sample_token_ids(
        lm,
        tokenizer,
        prompts_k,
        config.max_new_tokens,
        config.temperature,
        config.top_p,
        config.mini_batch_size * 2,
        synced=synced,
    )
    texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]
    scores, components = reward_fn(rows_k, texts)
    scores = torch.tensor(scores, dtype=torch.float32)
    if config.missing_eos_penalty is not None:
        scores -= config.missing_eos_penalty * torch.tensor([float(tokenizer.eos_token_id not in r) for r in responses])
    return Rollouts(rows_k, prompts_k, responses, texts, scores, components)


def _batch(rollouts: Rollouts, tokenizer, config, device, lm, index: list[int] | None = None) -> dict:
    """The sequences of ``rollouts`` (all, or ``index``) as a batch on ``device``: one row of segments when
    ``lm`` runs segment attention, else the padding-free rows or padded batch the config asks for."""
    index = range(len(rollouts.response_ids)) if index is None else index
    sequences = [rollouts.prompt_ids[i] + rollouts.response_ids[i] for i in index]
    starts = [len(rollouts.prompt_ids[i]) for i in index]
    one_row = uses_segment_attention(lm)
    batch = build_batch(sequences, starts, tokenizer.pad_token_id, config.padding_free, config.padding_side, one_row)
    return to_device(batch, device)


def _minibatches(config, n: int, step: int):
    """The index sets of a step's updates: ``num_ppo_epochs`` seeded shuffles of the ``n`` rollouts, cut
    into ``mini_batch_size`` pieces."""
    generator = torch.Generator().manual_seed(config.seed * 7919 + step)
    for _ in range(config.num_ppo_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.mini_batch_size):
            yield order[start : start + config.mini_batch_size]


def _optimise(config, method, session: TrainingSession, rollouts, tokenizer, prepared, step) -> dict:
    """``num_ppo_epochs`` passes of minibatch updates; returns the means of the applied updates' loss, stats
    and gradient norm. An update whose loss or gradients are not finite is skipped and counted by the
    session. Where the session defers its reads (a GPU), an update reads nothing: the norms and stats are
    read once, after the last update; elsewhere the step stops early once too many came in a row."""
    model, device = session.model, session.accelerator.device
    norms: list[float | None] = []  # None: left on the device, read by settle()
    rows: list[torch.Tensor] = []
    keys: list[str] = []
    for index in _minibatches(config, len(rollouts.response_ids), step):
        batch = _batch(rollouts, tokenizer, config, device, session.unwrapped.lm, index.tolist())

        def update(batch=batch, index=index):
            out = model(batch, config.logprob_chunk_size, config.temperature)
            loss, stats = method.loss(config, out, _subset(prepared, index.to(device), out.logps.shape[1]))
            session.backend.backward(model, loss)
            return loss, stats

        loss, stats = session.accumulate(update)
        norm = session.optimizer_step(defer=True)
        values = {"loss/total": loss, **stats}
        keys = list(values)
        rows.append(
            torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(()) for v in values.values()])
        )
        norms.append(norm)
        if norm is not None and not math.isfinite(norm) and session.too_many_nonfinite:
            break
    settled = iter(session.settle())
    norms = [next(settled) if norm is None else norm for norm in norms]
    applied = [row + [norm] for row, norm in zip(torch.stack(rows).tolist(), norms) if math.isfinite(norm)]
    return {key: sum(column) / len(applied) for key, column in zip([*keys, "grad_norm"], zip(*applied))}


def _write_samples(run_dir: Path, step: int, rollouts: Rollouts, count: int) -> None:
    with (run_dir / "samples.jsonl").open("a", encoding="utf-8") as handle:
        for i in range(min(count, len(rollouts.texts))):
            handle.write(
                json.dumps(
                    {
                        "step": step,
                        "prompt": rollouts.rows[i]["prompt"],
                        "response": rollouts.texts[i],
                        "score": round(float(rollouts.scores[i]), 4),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
