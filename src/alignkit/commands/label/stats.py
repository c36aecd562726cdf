"""What the labels say: agreement between people, position bias, agreement with the AI judge, and the
majority vote that export turns into training rows. Pure functions of label records
(``{"annotator", "item_id", "choice", "score", "shown_left"}``); five-point labels count as their
side (1-2: a, 3: tie, 4-5: b) wherever categories are compared.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict


def cohen_kappa(first: list[str], second: list[str]) -> float:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e)."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    expected = sum(counts_a[c] * counts_b[c] for c in set(first) | set(second)) / (n * n)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def krippendorff_alpha(units: list[list[str]]) -> float:
    """Krippendorff's alpha (nominal) over units, each the labels it received; units with fewer than
    two labels are not pairable and are left out. alpha = 1 - D_o / D_e from the coincidence matrix."""
    coincidences: dict[tuple[str, str], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, a in enumerate(values):
            for j, b in enumerate(values):
                if i != j:
                    coincidences[(a, b)] += 1 / (m - 1)
    totals: dict[str, float] = defaultdict(float)
    for (a, _), weight in coincidences.items():
        totals[a] += weight
    n = sum(totals.values())
    if n == 0:
        return float("nan")
    observed = sum(w for (a, b), w in coincidences.items() if a != b)
    expected = sum(totals[a] * totals[b] for a in totals for b in totals if a != b) / (n - 1)
    return 1.0 if expected == 0 else 1 - observed / expected


def side(label: dict) -> str:
    """The label's category: a / b / tie (a five-point score counts as its side), up / down, pass / fail."""
    score = label.get("score")
    if score is not None:
        return "a" if score < 3 else "b" if score > 3 else "tie"
    return label["choice"]


def majority(labels: list[dict]) -> tuple[str | None, Counter]:
    """The item's majority category (None when the top is shared) and the vote counts."""
    votes = Counter(side(label) for label in labels)
    ranked = votes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, votes
    return ranked[0][0], votes


def bootstrap_interval(hits: list[bool], seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of a mean of 0/1 outcomes (seeded: the same labels give the same interval)."""
    if not hits:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(hits, k=len(hits))) / len(hits) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def label_stats(labels: list[dict], items: list[dict], annotators: list[str], seed: int = 0) -> dict:
    """Labels per annotator, agreement (Cohen's kappa for two annotators, Krippendorff's alpha for
    any number), position bias (share of decided compare labels won by the left answer), and, when
    items carry a ``judge`` label, the judge's agreement with the people's majority (bootstrap 95%
    interval) and the items where they disagree."""
    by_item: dict[str, list[dict]] = defaultdict(list)
    for label in labels:
        by_item[label["item_id"]].append(label)
    stats: dict = {
        "labels": len(labels),
        "items": len(items),
        "items_labelled": len(by_item),
        "per_annotator": {name: sum(label["annotator"] == name for label in labels) for name in annotators},
    }
    active = [name for name in annotators if stats["per_annotator"][name]]
    if len(active) == 2:
        pairs = [
            (next(x for x in ls if x["annotator"] == active[0]), next(x for x in ls if x["annotator"] == active[1]))
            for ls in by_item.values()
            if {x["annotator"] for x in ls} >= set(active)
        ]
        stats["cohen_kappa"] = cohen_kappa([side(a) for a, _ in pairs], [side(b) for _, b in pairs]) if pairs else None
        stats["kappa_items"] = len(pairs)
    stats["krippendorff_alpha"] = krippendorff_alpha([[side(x) for x in ls] for ls in by_item.values()])
    decided = [x for x in labels if x.get("shown_left") and side(x) in ("a", "b")]
    if decided:
        left_wins = sum(side(x) == x["shown_left"] for x in decided)
        stats["position_bias"] = {
            "left_wins": left_wins,
            "decided": len(decided),
            "left_win_rate": left_wins / len(decided),
        }
    judged = {item["id"]: item["judge"] for item in items if item.get("judge")}
    if judged:
        hits, disagreements = [], []
        for item_id, judge in judged.items():
            verdict, votes = majority(by_item[item_id]) if by_item.get(item_id) else (None, Counter())
            if verdict is None:
                continue
            hits.append(verdict == judge)
            if verdict != judge:
                disagreements.append({"item_id": item_id, "judge": judge, "people": verdict, "votes": dict(votes)})
        low, high = bootstrap_interval(hits, seed)
        stats["judge"] = {
            "items": len(hits),
            "agreement": sum(hits) / len(hits) if hits else None,
            "interval_95": [low, high],
            "disagreements": disagreements,
        }
    return stats
