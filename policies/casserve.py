"""CasServe, the paper's baseline: the same cascade with a fixed threshold per tier."""

from __future__ import annotations

from collections.abc import Callable

from policies.base import Decision, Scope


class CasServePolicy:
    """Escalate iff confidence < the tier's fixed threshold."""

    name = "casserve"
    window_namespaces: tuple[str, ...] = ()  # fixed thresholds: no window

    def __init__(self, threshold_for: Callable[[str], float]) -> None:
        self._threshold_for = threshold_for

    async def decide(self, tier: str, scope: Scope, confidence: float) -> Decision:
        threshold = self._threshold_for(tier)
        return Decision(verdict="escalate" if confidence < threshold else "keep", threshold=threshold)

    def bypassed(self, tier: str, scope: Scope) -> bool:
        return False
