"""What a GPU run needs to be right, checked on CPU: the policy and its reference compute alike (step 1
of DPO is log 2 in every reference mode and precision, even with dropout in the model and in LoRA),
and every module a trainer runs sits on the accelerator's device after set-up, whatever device the
model was loaded on."""

import math

import pytest
import torch
from conftest import build_tokenizer, needs_bf16, tiny_llama_config, tiny_run_args, write_prompts
from kernel_stand_ins import SHARED_MEMORY, install_flex_stand_in
from test_training import config_for

from alignkit.train.metrics_log import read_metrics


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """A tiny Llama whose config asks for attention dropout (as GPT-2, OPT and Phi have dropout)."""
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = tiny_llama_config(len(tokenizer), attention_dropout=0.1, max_position_embeddings=256, bos_token_id=1)
    path = tmp_path_factory.mktemp("dropout-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def first_loss(model_dir, pairs_file, out, *extra) -> float:
    from alignkit.train.dpo import train_dpo

    train_dpo(config_for(model_dir, pairs_file, out, "--max_steps", "1", "--beta", "1.0", "--eval_split", "0", *extra))
    return next(r["loss"] for r in read_metrics(out) if "loss" in r)


PRECISIONS = ["no", pytest.param("bf16", marks=needs_bf16)]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_step_one_dpo_loss_is_log_2_in_every_mode(precision, dropout_model_dir, pairs_file, tmp_path):
    losses = {}
    for peft in ("false", "true"):
        for precompute in ("true", "false"):
            key = f"peft={peft} precompute={precompute} {precision}"
            losses[key] = first_loss(
                dropout_model_dir,
                pairs_file,
                tmp_path / key.replace(" ", "_"),
                *("--use_peft", peft, "--lora_dropout", "0.1", "--precompute_ref_log_probs", precompute),
                *("--mixed_precision", precision),
            )
    # exactly log 2 (the issue asks for 1e-3, which lets a reference computed in fp32 against a bf16 policy
    # through: 0.69307 on this model)
    assert losses == {key: pytest.approx(math.log(2), abs=1e-6) for key in losses}
    if precision == "bf16":
        return
    # the control: the model's dropout left on, the live policy is stochastic and its reference is not
    kept = first_loss(
        dropout_model_dir,
        pairs_file,
        tmp_path / "kept",
        "--disable_dropout",
        "false",
        "--precompute_ref_log_probs",
        "false",
    )
    assert abs(kept - math.log(2)) > 1e-3


class _SetUpDone(Exception):
    """Raised where the training loop would start its first step: set-up is complete."""


def stand_in_accelerator(seen: dict):
    """An accelerator whose device is ``meta``, never the device a model is loaded on: whatever set-up
    leaves on the loading device (the CPU) is found there after it."""
    from accelerate import Accelerator

    class MetaAccelerator(Accelerator):
        @property
        def device(self):
            return torch.device("meta")

        def prepare(self, *objects):
            return tuple(o.to(self.device) if isinstance(o, torch.nn.Module) else o for o in objects)

    def make(mixed_precision=None):
        seen["accelerator"] = MetaAccelerator(cpu=True)
        return seen["accelerator"]

    return make


@pytest.fixture
def set_up_only(monkeypatch):
    """Runs a trainer up to its first step on the stand-in accelerator; records the session."""
    from alignkit.train import common, session

    seen: dict = {}
    monkeypatch.setattr(session, "make_accelerator", stand_in_accelerator(seen))

    def stop(self):
        seen["session"] = self
        raise _SetUpDone

    def record_pass(reference, items, collate, batch_size, cache, fingerprint, device, *args, **kwargs):
        seen["precomputed_on"] = {device} | {p.device for p in reference.policy.parameters()}
        for item in items:
            item["ref_logps"] = [0.0, 0.0]
        return len(items)

    monkeypatch.setattr(session.TrainingSession, "__enter__", stop)
    monkeypatch.setattr(common, "precompute_reference", record_pass)
    return seen


def devices(*modules) -> set:
    return {t.device.type for m in modules for t in [*m.parameters(), *m.buffers()]}


@pytest.mark.parametrize("trainer", ["dpo-live", "dpo-precomputed", "kto-live", "ppo-full"])
def test_every_module_a_trainer_runs_is_on_the_accelerators_device(
    trainer, set_up_only, tiny_model_dir, pairs_file, tmp_path
):
    from alignkit.configs import KTOConfig, PPOConfig, load_config
    from alignkit.train.dpo import train_dpo
    from alignkit.train.kto import train_kto
    from alignkit.train.ppo import train_ppo

    out = tmp_path / "run"
    live = ("--precompute_ref_log_probs", "false")
    with pytest.raises(_SetUpDone):
        if trainer == "dpo-live":
            train_dpo(config_for(tiny_model_dir, pairs_file, out, *live))
        elif trainer == "dpo-precomputed":
            train_dpo(config_for(tiny_model_dir, pairs_file, out, "--precompute_ref_log_probs", "true"))
        elif trainer == "kto-live":
            train_kto(load_config(KTOConfig, None, tiny_run_args(tiny_model_dir, pairs_file, out, *live)))
        else:
            from conftest import build_reward_model

            scorer_dir = tmp_path / "reward-model"
            tokenizer = build_tokenizer(with_pad=True)
            build_reward_model(len(tokenizer)).save_pretrained(scorer_dir)
            tokenizer.save_pretrained(scorer_dir)
            prompts = write_prompts(tmp_path / "prompts.jsonl")
            rewards = f"[{{kind: verifier}}, {{kind: reward_model, model: {scorer_dir}}}]"
            args = tiny_run_args(tiny_model_dir, prompts, out, "--rewards", rewards)
            train_ppo(load_config(PPOConfig, None, args))
    session = set_up_only["session"]
    assert devices(session.unwrapped) == {"meta"}  # the policy (and PPO's value head, which it holds)
    if trainer == "dpo-precomputed":
        assert set_up_only["precomputed_on"] == {torch.device("meta")}
    if trainer.endswith("live") or trainer == "ppo-full":
        reference = session.reference
        assert reference.frozen is not None and devices(reference.frozen) == {"meta"}
    if trainer == "ppo-full":
        assert session.unwrapped.value_head is not None and devices(session.unwrapped.value_head) == {"meta"}
        scorers = [scorer for _, _, scorer in session.reward_fn.terms if hasattr(scorer, "model")]
        assert scorers and devices(*(s.model for s in scorers)) == {"meta"}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_rl_kl_at_the_first_step_is_zero_with_a_frozen_reference(precision, tiny_model_dir, tmp_path):
    """Full fine-tuning: the reference is a frozen copy that accelerate never wraps; it samples and scores
    under the policy's autocast, so before any update the policy and its reference agree exactly."""
    from alignkit.configs import GRPOConfig, load_config
    from alignkit.train.grpo import train_grpo

    prompts = write_prompts(tmp_path / "prompts.jsonl", n=4)
    args = tiny_run_args(tiny_model_dir, prompts, tmp_path / "run", "--max_steps", "1", "--mixed_precision", precision)
    train_grpo(load_config(GRPOConfig, None, [*args, "--max_new_tokens", "6", "--rewards", "[{kind: length}]"]))
    first = next(r for r in read_metrics(tmp_path / "run") if "objective/kl" in r)
    assert first["objective/kl"] == 0.0


def _logged_run(trainer: str, model_dir, pairs_file, out) -> list[tuple[float, float]]:
    """(loss, grad_norm) per logged step of a 2-step LoRA run of ``trainer`` ("dpo" or "grpo")."""
    if trainer == "dpo":
        from alignkit.train.dpo import train_dpo

        args = ("--max_steps", "2", "--logging_steps", "1", "--eval_split", "0", "--use_peft", "true")
        train_dpo(config_for(model_dir, pairs_file, out, *args, "--precompute_ref_log_probs", "true"))
        return [(r["loss"], r["grad_norm"]) for r in read_metrics(out) if "grad_norm" in r]
    from alignkit.configs import GRPOConfig, load_config
    from alignkit.train.grpo import train_grpo

    out.parent.mkdir(parents=True, exist_ok=True)
    prompts = write_prompts(out.parent / "prompts.jsonl", n=4)
    args = tiny_run_args(model_dir, prompts, out, "--max_steps", "2", "--logging_steps", "1", "--use_peft", "true")
    train_grpo(load_config(GRPOConfig, None, [*args, "--max_new_tokens", "6", "--rewards", "[{kind: length}]"]))
    return [(r["loss/total"], r["grad_norm"]) for r in read_metrics(out) if "grad_norm" in r]


@pytest.mark.parametrize("trainer, caught_by", [("dpo", "first update"), ("grpo", "first update"), ("dpo", "probe")])
def test_a_kernel_whose_backward_fails_is_passed_over_and_the_step_redone(
    trainer, caught_by, monkeypatch, capsys, tiny_model_dir, pairs_file, tmp_path
):
    """A one-call kernel that attends forward but fails backward: the run logs exactly what a loop-only run
    logs, instead of crashing. On a GPU the probe before ``accelerate.prepare`` (``check_kernels_train``)
    meets the failure first, so no update is redone (a distributed run's gradient reduction never starts
    twice); without it (a CPU run here), the first update is redone with the loop, its partial gradients
    dropped (LoRA's last o_proj got its gradient before the attention's backward raised). The supervised
    loop and RL's updates both go through ``TrainingSession.accumulate``."""
    from alignkit.models import segment_attention
    from alignkit.train.session import TrainingSession

    expected = _logged_run(trainer, tiny_model_dir, pairs_file, tmp_path / "loop" / "run")
    counts = install_flex_stand_in(monkeypatch.setattr)
    monkeypatch.setattr(segment_attention, "kernel_probe_wanted", lambda device: caught_by == "probe")
    failed_at_first_update = []
    accumulate = TrainingSession.accumulate

    def first_update_sees(self, work):
        failed_at_first_update.append(dict(segment_attention._failed))
        return accumulate(self, work)

    monkeypatch.setattr(TrainingSession, "accumulate", first_update_sees)
    got = _logged_run(trainer, tiny_model_dir, pairs_file, tmp_path / "flex" / "run")
    assert segment_attention._failed == {"flex": SHARED_MEMORY} and counts["failures"] == 1
    assert failed_at_first_update[0] == ({"flex": SHARED_MEMORY} if caught_by == "probe" else {})
    assert capsys.readouterr().err.count("the flex segment-attention kernel failed") == 1
    assert segment_attention.kernel_status() == "loop (flex failed)"  # what gpu_bench.py's rows report
    assert len(got) == 2 and got == [pytest.approx(row, rel=1e-6) for row in expected]


def test_a_sharded_run_refuses_to_redo_an_update_whose_backward_failed(
    monkeypatch, tiny_model_dir, pairs_file, tmp_path
):
    """Under FSDP2 a redone update trained on silently wrong gradients (measured with two processes: a zero
    gradient norm from step 2 on), so a sharded run stops at the failed backward with what to do. Here the
    session is told after ``prepare`` that its state is sharded (FSDP), as a two-process FSDP2 run's is."""
    from alignkit.errors import AlignkitError
    from alignkit.train.session import TrainingSession

    install_flex_stand_in(monkeypatch.setattr)
    prepare = TrainingSession.prepare

    def prepare_sharded(self, *args, **kwargs):
        state = prepare(self, *args, **kwargs)
        self.backend.sharded_state, self.backend.kind = True, "FSDP"
        return state

    monkeypatch.setattr(TrainingSession, "prepare", prepare_sharded)
    with pytest.raises(AlignkitError) as raised:
        _logged_run("dpo", tiny_model_dir, pairs_file, tmp_path / "run")
    assert str(raised.value) == (
        f"a segment-attention kernel failed in this update's backward (flex: {SHARED_MEMORY}), and an update of "
        "a sharded run (FSDP) cannot be redone in place. Run again with ALIGNKIT_SEGMENT_KERNEL=loop (no "
        "checkpoint was written yet: add --overwrite)"
    )
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no step was logged


def test_the_kernel_probe_attends_forward_and_backward_in_the_models_shape(monkeypatch, capsys, tiny_model_dir):
    """``check_kernels_train`` reads the attention's shape from the model (heads, key/value heads, head size,
    dtype), passes over a kernel whose backward fails, keeps one that works (called once: forward and
    backward), touches no parameter's gradient, and re-raises the failure of a kernel the user asked for."""
    from transformers import AutoModelForCausalLM

    from alignkit.models import segment_attention
    from alignkit.models.segment_attention import SEGMENT_ATTENTION, check_kernels_train, set_attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cpu = torch.device("cpu")
    check_kernels_train(model, cpu)  # no segment attention: nothing to probe
    set_attention(model, SEGMENT_ATTENTION)
    config = model.config
    shape = segment_attention.attention_shape(model)
    assert shape[:3] == (config.num_attention_heads, config.num_key_value_heads, config.hidden_size // 4)
    assert shape[4] == torch.float32 and config.num_attention_heads == 4 != config.num_key_value_heads

    counts = install_flex_stand_in(monkeypatch.setattr, backward_fails=False)
    check_kernels_train(model, cpu)  # a CPU run never probes
    assert counts["calls"] == 0
    monkeypatch.setattr(segment_attention, "kernel_probe_wanted", lambda device: True)
    check_kernels_train(model, cpu)
    assert counts["calls"] == 1 and segment_attention._failed == {}
    assert all(p.grad is None for p in model.parameters())

    counts = install_flex_stand_in(monkeypatch.setattr)
    check_kernels_train(model, cpu)
    assert counts == {"calls": 1, "failures": 1} and segment_attention._failed == {"flex": SHARED_MEMORY}
    assert capsys.readouterr().err.count("the flex segment-attention kernel failed") == 1
    check_kernels_train(model, cpu)  # the loop serves from now on
    assert counts["calls"] == 1

    install_flex_stand_in(monkeypatch.setattr)
    monkeypatch.setenv(segment_attention.KERNEL_VARIABLE, "flex")
    with pytest.raises(RuntimeError, match="out of resource: shared memory"):
        check_kernels_train(model, cpu)
    # a 4-bit model's projections hold integers; the hidden states have its embedding's dtype
    model.get_input_embeddings().to(torch.bfloat16)
    assert segment_attention.attention_shape(model)[4] == torch.bfloat16
