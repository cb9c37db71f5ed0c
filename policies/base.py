"""The seams of the decision logic. Score apart from decision: estimators return a number,
policies compare it, stores remember. Nothing here knows about HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Task = Literal["classification", "generation"]
TASKS: tuple[Task, ...] = ("classification", "generation")


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the alternatives the tier reported."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class WindowKey:
    """Identifies one sliding window: windows are kept per policy, tier and scope (`Scope.name`: the
    task alone when keyed by task, as in the paper, after the tenant's name when not shared)."""

    policy: str
    tier: str
    scope: str


@dataclass(frozen=True, slots=True)
class Scope:
    """What a decision is about below the policy and the tier: the task, the workload it belongs to
    ("" when keyed by task alone, as in the paper), the tenant whose workload it is ("" when shared
    by every tenant) and, for early-commit streaming, how many prefix tokens were judged (0: the
    whole answer). Windows, probe windows and competence curves are kept per scope; `name` is the
    one place its text form is built."""

    task: Task
    workload: str = ""
    prefix_tokens: int = 0
    tenant: str = ""

    @property
    def name(self) -> str:
        # A workload named after its task (what an unnamed, unlabelled request gets) adds nothing: those
        # windows are the paper's per-task windows, under the same keys. `~` is in neither a tenant's
        # nor a workload's alphabet, so no tenant's names can spell another's.
        text = f"{self.task}/{self.workload}" if self.workload and self.workload != self.task else self.task
        if self.tenant:
            text = f"{self.tenant}~{text}"
        return f"{text}@prefix{self.prefix_tokens}" if self.prefix_tokens else text

    def whole(self) -> Scope:
        """The same scope for whole answers (bypass and bypassed tiers' probes are about those)."""
        return Scope(self.task, self.workload, 0, self.tenant) if self.prefix_tokens else self

    def key(self, policy: str, tier: str) -> WindowKey:
        return WindowKey(policy, tier, self.name)


@dataclass(frozen=True, slots=True)
class WindowStep:
    """What a window said after one confidence was appended."""

    threshold: float  # the window's beta-quantile after the append
    length: int  # entries in the window after the append and trim
    fallback: bool = False  # True when the shared store was unreachable and a local window answered


# What a policy says of a tier's answer: keep it; escalate to the next tier; or verify — it would keep
# the answer, but the answer is not trusted yet (a quality floor still learning): the request goes to
# the top tier, whose answer is served, and the pair teaches the policy.
Verdict = Literal["keep", "escalate", "verify"]
# Why a verdict is not the plain threshold's: the quality floor escalated, or it verifies while warming up.
DecisionReason = Literal["quality", "warmup"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A policy's verdict on one tier's answer. Built by keyword; derive one with `dataclasses.replace`."""

    verdict: Verdict
    threshold: float | None  # None while the window is too short to judge (cold start)
    window_length: int = 0
    fallback: bool = False  # the window consulted was a local stand-in for the shared one
    reason: DecisionReason | None = None

    @property
    def escalate(self) -> bool:
        return self.verdict == "escalate"

    @property
    def verify(self) -> bool:
        return self.verdict == "verify"


class ConfidenceEstimator(Protocol):
    """Turns one choice's token logprobs into a confidence in [0, 1], or None when unusable."""

    def __call__(self, tokens: Sequence[TokenLogprob], labels: Sequence[str] | None) -> float | None: ...


class WindowStore(Protocol):
    """Remembers recent confidences per window and answers the beta-quantile, atomically per step."""

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        """Append `confidence`, drop the oldest beyond `size`, return the beta-quantile of what remains."""
        ...

    async def snapshot(self, key: WindowKey) -> list[float]:
        """The window's confidences, oldest first (for inspection; not on the request path)."""
        ...

    async def reset(self, key: WindowKey | None = None) -> None:
        """Empty one window, or all of them."""
        ...


class ThresholdPolicy(Protocol):
    """Decides whether a non-final tier keeps an answer of the given confidence."""

    name: str

    @property
    def window_namespaces(self) -> tuple[str, ...]:
        """The namespaces of the sliding windows it keeps in the window store (`scope.key(namespace,
        tier)` names one); empty when it keeps none (fixed thresholds)."""
        ...

    async def decide(self, tier: str, scope: Scope, confidence: float) -> Decision: ...

    def bypassed(self, tier: str, scope: Scope) -> bool:
        """True when the tier should not even be asked in this scope (a learned quality floor)."""
        ...


class Learning(Protocol):
    """The optional hooks of a policy that learns from probes (the quality floor): what it estimates of
    an answer, what operators see of it and how they make it start over. A gateway finds them with
    `Runtime.learning(policy)`; a policy without them is judged by its window or thresholds alone."""

    @property
    def probe_namespace(self) -> str:
        """The namespace of its probe windows in the probe store (`scope.key(namespace, tier)` names one)."""
        ...

    def estimate(self, tier: str, scope: Scope, confidence: float) -> float | None:
        """The agreement with the top tier expected of an answer of this confidence; None before enough probes."""
        ...

    def describe(self, tier: str, scope: Scope) -> dict[str, object]:
        """What it has learned of the tier in this scope, for operators."""
        ...

    async def sync(self, tier: str, scope: Scope) -> None:
        """Bring what `describe` reads up to date (shared probe windows)."""
        ...

    async def reset_probes(self, tier: str | None = None, scope: Scope | None = None) -> None:
        """Forget what probes taught about one tier and scope (both given), or about everything."""
        ...
