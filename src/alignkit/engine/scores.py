"""Sequence-level scores (reward models): the head applied to each sequence's last token.

Works on the same padded or padding-free batches as the log-prob engine (``last_token`` says where
each sequence ends), and gives exactly what ``AutoModelForSequenceClassification`` gives on the
unpadded sequence, so a saved reward model scores the same with plain transformers.
"""

from __future__ import annotations

import torch
from torch import nn

from alignkit.engine.logprobs import backbone_of, last_hidden_states, unwrapped


def reward_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder backbone, score head) of a sequence-classification model, PEFT-wrapped or not."""
    return backbone_of(model), unwrapped(model).score


def sequence_scores(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[N]`` fp32 scores, one per sequence in ``batch``."""
    backbone, head = reward_parts(model)
    hidden = last_hidden_states(backbone, batch)
    last = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["last_token"])
    return head(last).squeeze(-1).float()


class ScoreModel(nn.Module):
    """A reward model whose forward returns per-sequence scores (what ``accelerate`` prepares)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reward head's score of each sequence in ``batch``."""
        return sequence_scores(self.lm, batch)
