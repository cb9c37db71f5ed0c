"""How well an agreement measure, computed without running code, predicts whether a lower tier's
answer and the top tier's pass or fail the tests alike: the evidence behind `policies.code_similarity`.

For every problem and lower tier: the pair (that tier's answer, the top tier's answer), its label
`same` (both pass or both fail) and each measure's score. Reported per measure: ROC AUC of the score
for `same` (and for the lower answer passing, what the floor protects), and at a threshold (the
gateway's 0.5 for raw token-F1; for the code measures one chosen on the even-indexed problems,
measured on the odd ones): the agreement rate the probes would see, the share of agreeing pairs that
really pass alike (precision), and the true pass-alike rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.cascade.probes import token_f1
from policies.code_similarity import code_similarity, similarity

MEASURES: dict[str, Callable[[str, str], float]] = {
    "token_f1 (raw text, gateway today)": token_f1,
    "code bag-F1 (code_similarity)": code_similarity,
    "code bag-F1, renamed": lambda a, b: similarity(a, b, "bag", rename=True),
    "code sequence": lambda a, b: similarity(a, b, "sequence", rename=False),
    "code sequence, renamed": lambda a, b: similarity(a, b, "sequence", rename=True),
}
GATEWAY_TOKEN_F1 = 0.5  # policy.quality.similarity's default
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.3 .. 0.95


def pairs(rows: Sequence[Mapping[str, Any]], lower: Sequence[str], top: str) -> list[dict[str, Any]]:
    """(lower answer, top answer) pairs with their pass verdicts, one per problem and lower tier."""
    by_key = {(int(r["index"]), str(r["tier"])): r for r in rows if "error" not in r}
    out: list[dict[str, Any]] = []
    for (index, tier), row in sorted(by_key.items()):
        reference = by_key.get((index, top))
        if tier not in lower or reference is None:
            continue
        out.append({"index": index, "tier": tier, "answer": str(row["answer"]), "top": str(reference["answer"]),
                    "passes": bool(row["correct"]), "top_passes": bool(reference["correct"])})
    return out


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC (ties count one half): P(score of a positive > score of a negative)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def at_threshold(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> dict[str, float]:
    """What probes with this threshold would see: agreement rate, its precision, balanced accuracy."""
    agree = [s >= threshold for s in scores]
    n = len(scores)
    tp = sum(a and y for a, y in zip(agree, labels, strict=True))
    positives = sum(labels)
    tn = sum((not a) and (not y) for a, y in zip(agree, labels, strict=True))
    negatives = n - positives
    sensitivity = tp / positives if positives else float("nan")
    specificity = tn / negatives if negatives else float("nan")
    return {"threshold": threshold, "agree_rate": sum(agree) / n if n else float("nan"),
            "precision": tp / sum(agree) if any(agree) else float("nan"),
            "balanced_accuracy": (sensitivity + specificity) / 2, "same_rate": positives / n if n else float("nan")}


def best_threshold(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The threshold of THRESHOLDS with the best balanced accuracy (ties: the higher, the stricter)."""
    return max(THRESHOLDS, key=lambda t: (at_threshold(scores, labels, t)["balanced_accuracy"], t))


def analyse(rows: Sequence[Mapping[str, Any]], lower: Sequence[str], top: str) -> dict[str, Any]:
    """Every measure on the recorded pairs: AUC on all, threshold tuned on even problems, scored on odd."""
    found = pairs(rows, lower, top)
    labels = [p["passes"] == p["top_passes"] for p in found]
    even = [i for i, p in enumerate(found) if p["index"] % 2 == 0]
    odd = [i for i, p in enumerate(found) if p["index"] % 2 == 1]
    result: dict[str, Any] = {"pairs": len(found), "same_rate": sum(labels) / len(labels) if labels else None,
                              "lower": list(lower), "top": top, "measures": {}}
    for name, measure in MEASURES.items():
        scores = [measure(p["answer"], p["top"]) for p in found]
        tuned = GATEWAY_TOKEN_F1 if name.startswith("token_f1") else best_threshold(
            [scores[i] for i in even], [labels[i] for i in even])
        result["measures"][name] = {
            "auc": auc(scores, labels),
            # The floor's real question: is the kept answer right? (the top tier is right most of the time)
            "auc_lower_passes": auc(scores, [p["passes"] for p in found]),
            "auc_by_tier": {t: auc([s for s, p in zip(scores, found, strict=True) if p["tier"] == t],
                                   [y for y, p in zip(labels, found, strict=True) if p["tier"] == t]) for t in lower},
            "on_odd": at_threshold([scores[i] for i in odd], [labels[i] for i in odd], tuned),
        }
    return result
