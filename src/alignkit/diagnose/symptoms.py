"""Live symptom warnings: the red flags of preference training, checked as metrics arrive.

Each rule looks at the logged records so far and fires at most once per run, with advice. The
monitor is a pure function of the metric records it is shown, so a resumed run replays
``metrics.jsonl`` into it and reports exactly what an uninterrupted run would have.

Rules (thresholds in :class:`SymptomThresholds`, configurable per run):

- ``early_accuracy``: ``rewards/accuracies`` above 0.98 with margins already above 0.3 within the
  first 10% of steps: the pairs are too easy or the model is memorising them (a tiny consistent
  margin at a low learning rate is not a red flag).
- ``rejected_collapse``: the policy's per-token log-prob of rejected answers fell more than 1.5 nats
  below the reference's (``logps/rejected_vs_ref_per_token``, the implicit reward per token without
  beta): DPO is pushing rejected answers into improbability instead of learning a preference. It is a
  fall relative to the reference, so long or unusual rejected answers (low log-probs from the start)
  never trigger it, and it is exactly 0 before the first update.
- ``flat_margins``: ``rewards/margins`` has not moved after a quarter of the run.
- ``chosen_falling``: ``rewards/chosen`` fell below 0 and kept falling over several logs: both
  answers are being made less likely (watch for degenerate text).
- ``eval_divergence``: the eval margin falls far behind the train margin (overfitting).
- ``nonfinite_loss``: a loss is NaN or infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignkit.configs import SymptomThresholds


@dataclass(frozen=True)
class Symptom:
    """A red flag seen in a run's metrics, at a step, with what to do about it."""

    name: str
    step: int
    message: str
    advice: str

    def record(self) -> dict:
        """The line written to metrics.jsonl."""
        return {"symptom": self.name, "message": self.message, "advice": self.advice}

    def __str__(self) -> str:
        return f"step {self.step}: {self.message} {self.advice}"


ADVICE = {
    "early_accuracy": "Pairs this easy teach little and invite overfitting: add harder "
    "pairs, raise beta, lower the learning rate, or try --loss_type ipo.",
    "rejected_collapse": "The model is learning to avoid rejected text rather than to prefer "
    "chosen text: raise beta, lower the learning rate, add rpo_alpha, or "
    "use --loss_type ipo.",
    "flat_margins": "Nothing is being learned: raise the learning rate (LoRA needs ~10x "
    "full fine-tuning), check that chosen and rejected really differ, and "
    "check the data is not truncated away.",
    "chosen_falling": "Both answers are losing probability: lower the learning rate, add "
    "rpo_alpha (an NLL term on chosen), and check samples for degenerate "
    "text.",
    "eval_divergence": "Train margins grow while held-out margins do not: stop earlier, raise "
    "beta, add data, or lower the learning rate.",
    "nonfinite_loss": "Lower the learning rate, keep max_grad_norm > 0, use float32 or "
    "bfloat16 rather than float16, and check the data for empty responses.",
    "reward_hacking_kl": "The reward may be gamed rather than earned: read samples.jsonl, raise "
    "kl_coef (or use adaptive_kl), lower the learning rate, or fix the "
    "reward.",
    "length_runaway": "Responses are running long: add a length term to the rewards, set "
    "missing_eos_penalty, or raise kl_coef.",
}


class SymptomMonitor:
    """Feed it every logged record with :meth:`observe`; it returns the symptoms that fire now."""

    def __init__(self, total_steps: int, thresholds: SymptomThresholds | None = None):
        self.total_steps = max(total_steps, 1)
        self.t = thresholds or SymptomThresholds()
        self.reported: set[str] = set()
        self.train: list[tuple[int, dict]] = []
        self.last_eval_margin: float | None = None

    def observe(self, step: int, metrics: dict) -> list[Symptom]:
        """The symptoms that ``metrics`` (a train or an eval log) newly show; each is reported once per run."""
        if "symptom" in metrics:  # a replayed report (resume): never report it again
            self.reported.add(metrics["symptom"])
            return []
        is_eval = any(k.startswith("eval/") for k in metrics)
        found = self._check_eval(step, metrics) if is_eval else self._check_train(step, metrics)
        fired = [s for s in found if s.name not in self.reported]
        self.reported.update(s.name for s in fired)
        return fired

    def _symptom(self, name: str, step: int, message: str) -> Symptom:
        return Symptom(name, step, message, ADVICE[name])

    def _check_train(self, step: int, m: dict) -> list[Symptom]:
        self.train.append((step, m))
        t, out = self.t, []
        loss = m.get("loss")
        if loss is not None and not _finite(loss):
            out.append(self._symptom("nonfinite_loss", step, f"the training loss is {loss}."))
        accuracy, margin = m.get("rewards/accuracies"), m.get("rewards/margins", 0.0)
        if (
            accuracy is not None
            and accuracy > t.early_accuracy
            and margin > t.early_margin
            and step <= t.early_fraction * self.total_steps
        ):
            out.append(
                self._symptom(
                    "early_accuracy",
                    step,
                    f"rewards/accuracies is {accuracy:.3f} (margin {margin:.2f}) after "
                    f"{step} of {self.total_steps} steps.",
                )
            )
        drop = m.get("logps/rejected_vs_ref_per_token")
        if drop is not None and drop < -t.rejected_drop_per_token:
            out.append(
                self._symptom(
                    "rejected_collapse",
                    step,
                    f"rejected answers fell {-drop:.2f} nats per token below the reference "
                    f"(threshold {t.rejected_drop_per_token:g}; logps/rejected "
                    f"{m.get('logps/rejected', float('nan')):.1f}).",
                )
            )
        margins = [(s, r["rewards/margins"]) for s, r in self.train if "rewards/margins" in r]
        if len(margins) >= 3 and step >= t.flat_after_fraction * self.total_steps:
            moved = max(abs(v - margins[0][1]) for _, v in margins)
            if moved < t.flat_margin_delta:
                out.append(
                    self._symptom(
                        "flat_margins", step, f"rewards/margins moved by {moved:.4f} at most over {len(margins)} logs."
                    )
                )
        chosen = [r["rewards/chosen"] for _, r in self.train if "rewards/chosen" in r][-(t.chosen_falling_logs + 1) :]
        if (
            len(chosen) == t.chosen_falling_logs + 1
            and chosen[-1] < 0
            and all(b < a for a, b in zip(chosen, chosen[1:]))
        ):
            out.append(
                self._symptom(
                    "chosen_falling",
                    step,
                    f"rewards/chosen fell over {t.chosen_falling_logs} logs in a row, to {chosen[-1]:.3f}.",
                )
            )
        return out

    def _check_eval(self, step: int, m: dict) -> list[Symptom]:
        t, out = self.t, []
        loss = m.get("eval/loss")
        if loss is not None and not _finite(loss):
            out.append(self._symptom("nonfinite_loss", step, f"the eval loss is {loss}."))
        eval_margin = m.get("eval/rewards/margins")
        train_margins = [r["rewards/margins"] for s, r in self.train if "rewards/margins" in r and s <= step]
        if eval_margin is not None and train_margins:
            train_margin = train_margins[-1]
            if train_margin >= t.divergence_min_train_margin and eval_margin < t.divergence_ratio * train_margin:
                out.append(
                    self._symptom(
                        "eval_divergence", step, f"eval margin {eval_margin:.3f} vs train margin {train_margin:.3f}."
                    )
                )
        return out


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class RewardHackingGuard:
    """RL's red flags: the reward rises while the KL to the reference climbs past a threshold, or
    response length runs away (grows past ``length_factor`` x its first value, or nearly all responses
    hit the token limit where at first most did not). Each fires once; the first logged record is the baseline."""

    def __init__(self, kl_threshold: float, length_factor: float):
        self.kl_threshold, self.length_factor = kl_threshold, length_factor
        self.first: dict | None = None
        self.reported: set[str] = set()

    def observe(self, step: int, m: dict) -> list[Symptom]:
        """Reward hacking signs in an RL log (KL past the threshold while the reward climbs, runaway length)."""
        if "symptom" in m:
            self.reported.add(m["symptom"])
            return []
        if "reward/score" not in m:
            return []
        if self.first is None:
            self.first = m
            return []
        out = []
        if m["reward/score"] > self.first["reward/score"] and m["objective/kl"] > self.kl_threshold:
            out.append(
                Symptom(
                    "reward_hacking_kl",
                    step,
                    f"reward rose {self.first['reward/score']:.3f} -> "
                    f"{m['reward/score']:.3f} while KL reached {m['objective/kl']:.2f} nats "
                    f"(threshold {self.kl_threshold:g}).",
                    ADVICE["reward_hacking_kl"],
                )
            )
        grown = m["response_length"] > self.length_factor * max(self.first["response_length"], 1.0)
        if grown or (m["truncated_fraction"] >= 0.9 and self.first["truncated_fraction"] < 0.5):
            why = (
                f"mean length {self.first['response_length']:.1f} -> {m['response_length']:.1f} tokens"
                if grown
                else f"{m['truncated_fraction']:.0%} of responses hit max_new_tokens"
            )
            out.append(Symptom("length_runaway", step, f"responses are running away: {why}.", ADVICE["length_runaway"]))
        fired = [s for s in out if s.name not in self.reported]
        self.reported.update(s.name for s in fired)
        return fired
