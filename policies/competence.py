"""How often a tier's kept answers agree with the top tier, as a function of their confidence.

Learned online from probes: pairs (confidence, agreed) in a sliding window per tier and task. The
estimate P(agree | confidence) is monotone non-decreasing (a more confident answer is never assumed
less likely to be right), fitted by isotonic regression (pool-adjacent-violators). Each level is
shrunk towards 1/2 by a uniform prior, (agreed + 1) / (probes + 2), so one lucky probe cannot vouch
for a tier: it takes at least 9 agreeing probes in a row of confidences to reach 0.9.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CompetenceCurve:
    """A step function: at confidence c, agreement is `levels[i]` for the last `starts[i]` <= c."""

    starts: tuple[float, ...]
    levels: tuple[float, ...]
    probes: int

    def agreement_at(self, confidence: float) -> float:
        index = bisect_right(self.starts, confidence) - 1
        return self.levels[max(index, 0)]

    def best(self) -> float:
        """The highest agreement any confidence reaches (the curve is non-decreasing)."""
        return self.levels[-1]


def fit_competence(pairs: Sequence[tuple[float, bool]]) -> CompetenceCurve | None:
    """Isotonic fit of agreed ~ confidence; None without any pair."""
    if not pairs:
        return None
    ordered = sorted(pairs, key=lambda pair: pair[0])
    # Blocks of (first confidence, sum of agreements, count), merged while they violate monotonicity.
    blocks: list[list[float]] = []
    for confidence, agreed in ordered:
        blocks.append([confidence, float(agreed), 1.0])
        # >=: equal neighbours pool too, so the prior below sees all the evidence for a level.
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1][1] += last[1]
            blocks[-1][2] += last[2]
    # Equal confidences must share one level: merge blocks that start at the same value.
    merged: list[list[float]] = []
    for block in blocks:
        if merged and merged[-1][0] == block[0]:
            merged[-1][1] += block[1]
            merged[-1][2] += block[2]
        else:
            merged.append(block)
    levels = [(b[1] + 1) / (b[2] + 2) for b in merged]
    # The prior shrinks small blocks more; keep the curve non-decreasing by never letting a level
    # exceed the ones above it (the conservative choice for a quality floor).
    for i in range(len(levels) - 2, -1, -1):
        levels[i] = min(levels[i], levels[i + 1])
    return CompetenceCurve(tuple(b[0] for b in merged), tuple(levels), len(pairs))
