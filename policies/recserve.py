"""RecServe's rule: escalate when a confidence falls below its window's beta-quantile."""

from __future__ import annotations

from collections.abc import Callable

from policies.base import Decision, Scope, WindowStore


class RecServePolicy:
    """Append first, then escalate iff the window holds more than one value and confidence < quantile."""

    name = "recserve"

    def __init__(self, store: WindowStore, beta_for: Callable[[str], float], window: int,
                 namespace: str = "recserve") -> None:
        self._store = store
        self._beta_for = beta_for
        self._window = window
        self._namespace = namespace  # policies built on this rule keep windows of their own
        self.window_namespaces = (namespace,)

    async def decide(self, tier: str, scope: Scope, confidence: float) -> Decision:
        step = await self._store.step(scope.key(self._namespace, tier), confidence, self._window,
                                      self._beta_for(tier))
        if step.length <= 1:
            return Decision(verdict="keep", threshold=None, window_length=step.length, fallback=step.fallback)
        return Decision(verdict="escalate" if confidence < step.threshold else "keep", threshold=step.threshold,
                        window_length=step.length, fallback=step.fallback)

    def bypassed(self, tier: str, scope: Scope) -> bool:
        return False
