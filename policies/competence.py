"""How often a tier's kept answers agree with the top tier, as a function of their confidence.

Learned online from probes: pairs (confidence, agreed) in a sliding window per tier and scope. The
shape of P(agree | confidence) is monotone non-decreasing (a more confident answer is never assumed
less likely to be right), fitted by isotonic regression (pool-adjacent-violators). Each level is not
the block's agreement rate but a lower confidence bound of it (Wilson's score interval, one-sided, at
`level`), so a floor built on it holds with that confidence rather than on average: with every probe
agreeing it takes 15 probes to vouch for 0.9 at level 0.9, 32 at level 0.97.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

DEFAULT_LEVEL = 0.9


@dataclass(frozen=True)
class CompetenceCurve:
    """Isotonic blocks of probes: from `starts[i]` on, `agreed[i]` of `counts[i]` probes agreed. Read
    as a step function of lower bounds at a confidence level (computed once per level)."""

    starts: tuple[float, ...]
    agreed: tuple[float, ...]
    counts: tuple[float, ...]
    probes: int
    _levels: dict[float, tuple[float, ...]] = field(default_factory=dict, compare=False, repr=False)

    def levels(self, level: float = DEFAULT_LEVEL) -> tuple[float, ...]:
        """Each block's lower bound at `level`, made non-decreasing by never letting a level exceed the
        ones above it (small blocks get low bounds; the conservative choice for a quality floor)."""
        known = self._levels.get(level)
        if known is None:
            bounds = [wilson_lower_bound(a, n, level) for a, n in zip(self.agreed, self.counts, strict=True)]
            for i in range(len(bounds) - 2, -1, -1):
                bounds[i] = min(bounds[i], bounds[i + 1])
            known = self._levels[level] = tuple(bounds)
        return known

    def agreement_at(self, confidence: float, level: float = DEFAULT_LEVEL) -> float:
        index = bisect_right(self.starts, confidence) - 1
        return self.levels(level)[max(index, 0)]

    def best(self, level: float = DEFAULT_LEVEL) -> float:
        """The highest agreement any confidence reaches (the curve is non-decreasing)."""
        return self.levels(level)[-1]


def wilson_lower_bound(agreed: float, count: float, level: float) -> float:
    """The one-sided lower bound at `level` of a proportion seen as agreed/count (Wilson score)."""
    if count <= 0 or agreed <= 0:
        return 0.0
    z = NormalDist().inv_cdf(level)
    p = agreed / count
    z2 = z * z
    centre = p + z2 / (2 * count)
    margin = z * math.sqrt(max(p * (1 - p) / count + z2 / (4 * count * count), 0.0))
    return min(1.0, max(0.0, (centre - margin) / (1 + z2 / count)))


def fit_competence(pairs: Sequence[tuple[float, bool]]) -> CompetenceCurve | None:
    """Isotonic fit of agreed ~ confidence; None without any pair."""
    if not pairs:
        return None
    ordered = sorted(pairs, key=lambda pair: pair[0])
    # Blocks of (first confidence, sum of agreements, count), merged while they violate monotonicity.
    blocks: list[list[float]] = []
    for confidence, agreed in ordered:
        blocks.append([confidence, float(agreed), 1.0])
        # >=: equal neighbours pool too, so the bound sees all the evidence for a level.
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
    return CompetenceCurve(tuple(b[0] for b in merged), tuple(b[1] for b in merged), tuple(b[2] for b in merged),
                           len(pairs))
