"""Setup the RL commands share: prompts (validated up front), the policy (without dropout by default), the
reference (adapters off under LoRA, else a frozen copy), the reward terms, and the final save."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from alignkit.data.prompts import load_prompts
from alignkit.diagnose.doctor import rl_preflight
from alignkit.engine.logprobs import LogProbModel, supports_segments
from alignkit.engine.reference import Reference
from alignkit.judges.rewards import CombinedReward
from alignkit.models.hub import check_hub
from alignkit.models.loading import load_policy, save_final_model
from alignkit.models.segment_attention import enable_segment_attention
from alignkit.train.common import is_main_process, start_run
from alignkit.train.loop import TrainingResult
from alignkit.train.rl_loop import PolicyWithValue, RLMethod, run_rl
from alignkit.train.run_dir import check_run_dir


def train_rl(config, method: RLMethod) -> TrainingResult:
    """Set up and run ``method`` on the config's prompts: policy (dropout off), reference, rewards, value head."""
    check_hub(config)  # a run that could not push stops now, not after training
    train_rows, eval_rows = load_prompts(config)
    if is_main_process():
        check_run_dir(config.output_dir, config.overwrite, config.resume)
    torch.manual_seed(config.seed)
    lm, tokenizer = load_policy(config)  # dropout off by default (disable_dropout), as in TRL
    if config.padding_free:  # rollout batches in one row, one attention call per layer on a GPU (as training's)
        enable_segment_attention(lm, supports_segments, config.max_prompt_length + config.max_new_tokens)
    # the judge's reply cache goes in the run; a batched reward function reads prompts as the policy does
    reward_fn = CombinedReward(config.rewards, Path(config.output_dir), tokenizer, config.apply_chat_template)
    rl_preflight(config, method.name, train_rows, eval_rows, tokenizer, lm, reward_fn)  # a fail writes nothing
    run_dir = start_run(config)
    policy = PolicyWithValue(lm, method.uses_value_head)
    reference = Reference(LogProbModel(lm, config.logprob_chunk_size), use_adapter=config.use_peft)

    def save_final(path: Path) -> None:
        save_final_model(lm, tokenizer, path)
        if policy.value_head is not None:  # kept beside the policy, so PPO can be continued or inspected
            save_file(
                {k: v.contiguous() for k, v in policy.value_head.state_dict().items()},
                str(path / "value_head.safetensors"),
            )

    return run_rl(config, method, train_rows, eval_rows, run_dir, policy, tokenizer, reference, reward_fn, save_final)
