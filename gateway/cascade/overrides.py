"""Run-time policy overrides (`PATCH /admin/policy`): β per tier and CasServe θ per tier, layered
over config.yaml. The policies read β and θ through `PolicyOverrides`, so a change applies to the
next decision without rebuilding anything; a reload starts from the file again (no overrides)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.schema import GatewayConfig


@dataclass(frozen=True, slots=True)
class Overrides:
    """β (RecServe) and θ (CasServe) per tier that replace the config's values."""

    beta: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"recserve": {"beta": dict(self.beta)}, "casserve": {"thresholds": dict(self.thresholds)}}

    @classmethod
    def from_json(cls, data: Any) -> Overrides:
        """Parse what `to_json` wrote (e.g. read back from Redis); malformed parts are dropped."""
        if not isinstance(data, Mapping):
            return cls()
        beta = _numbers(_dig(data, "recserve", "beta"))
        thresholds = _numbers(_dig(data, "casserve", "thresholds"))
        return cls(beta, thresholds)

    def fitting(self, config: GatewayConfig) -> tuple[Overrides, list[str]]:
        """The overrides this config can take (another replica may know other tiers), plus what was dropped."""
        names = [t.name for t in config.tiers]
        lower = set(names[:-1])
        dropped = [f"recserve.beta.{k}" for k in self.beta if k not in lower]
        dropped += [f"casserve.thresholds.{k}" for k in self.thresholds if k not in names]
        kept = Overrides({k: v for k, v in self.beta.items() if k in lower},
                         {k: v for k, v in self.thresholds.items() if k in names})
        return kept, dropped


def _dig(data: Mapping[str, Any], *keys: str) -> Any:
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


class PatchError(ValueError):
    """An invalid `PATCH /admin/policy` body; `errors` holds one 'key.path: message' per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class PolicyOverrides:
    """What the policies of one runtime consult for β and θ: the overrides, else the config."""

    def __init__(self, config: GatewayConfig, overrides: Overrides | None = None) -> None:
        self._config = config
        self._current = overrides or Overrides()

    @property
    def current(self) -> Overrides:
        return self._current

    def replace(self, overrides: Overrides) -> None:
        # One reference assignment: a decision sees either the old or the new set, never a mix.
        self._current = overrides

    def beta_for(self, tier: str) -> float:
        value = self._current.beta.get(tier)
        return value if value is not None else self._config.beta_for(tier)

    def threshold_for(self, tier: str) -> float:
        value = self._current.thresholds.get(tier)
        return value if value is not None else self._config.threshold_for(tier)


def apply_patch(config: GatewayConfig, current: Overrides, patch: Any) -> Overrides:
    """The overrides after `patch`, or PatchError listing every problem by key path.

    Shape: `{"recserve": {"beta": 0.2 | {tier: β | null}}, "casserve": {"thresholds": {tier: θ | null}}}`.
    A single β applies to every tier but the last; null removes a tier's override.
    """
    errors: list[str] = []
    if not isinstance(patch, Mapping) or not patch:
        raise PatchError(["(body): expected an object with 'recserve' and/or 'casserve'"])
    names = [t.name for t in config.tiers]
    beta = dict(current.beta)
    thresholds = dict(current.thresholds)
    for key in patch:
        if key not in ("recserve", "casserve"):
            errors.append(f"{key}: unknown key")
    errors += _patch_section(patch, "recserve", "beta", beta, names[:-1], open_interval=True, single=True,
                             why="β applies to every tier but the last",
                             expected="a number in (0, 1) or a map of tier → β")
    errors += _patch_section(patch, "casserve", "thresholds", thresholds, names, open_interval=False, single=False,
                             why="unknown tier", expected="a map of tier → θ")
    if errors:
        raise PatchError(errors)
    return Overrides(beta, thresholds)


def _patch_section(patch: Mapping[str, Any], name: str, field: str, target: dict[str, float], tiers: list[str], *,
                   open_interval: bool, single: bool, why: str, expected: str) -> list[str]:
    """Apply `patch[name][field]` to `target`: a map of tier → value (null removes one), or, where `single`,
    one value for every tier in `tiers`. Returns the problems found."""
    section = patch.get(name)
    if section is None:
        return []
    errors = _section(section, name, field)
    value = section.get(field) if isinstance(section, Mapping) else None
    if isinstance(value, Mapping):
        errors += _merge(target, value, f"{name}.{field}", set(tiers), open_interval=open_interval, why=why)
    elif value is not None:
        if single and _valid_number(value, open_interval=open_interval):
            target.clear()
            target.update({tier: float(value) for tier in tiers})
        else:
            errors.append(f"{name}.{field}: must be {expected}, got {value!r}")
    return errors


def _section(value: Any, name: str, only: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{name}: expected an object"]
    return [f"{name}.{k}: unknown key (only '{only}' can change at run time)" for k in value if k != only]


def _merge(target: dict[str, float], changes: Mapping[str, Any], path: str, allowed: set[str], *,
           open_interval: bool, why: str) -> list[str]:
    errors: list[str] = []
    for tier, value in changes.items():
        if tier not in allowed:
            errors.append(f"{path}.{tier}: {why} ({', '.join(sorted(allowed)) or 'none'})")
        elif value is None:
            target.pop(tier, None)
        elif _valid_number(value, open_interval=open_interval):
            target[tier] = float(value)
        else:
            bounds = "(0, 1)" if open_interval else "[0, 1]"
            errors.append(f"{path}.{tier}: must be a number in {bounds}, got {value!r}")
    return errors


def _valid_number(value: Any, *, open_interval: bool) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return 0 < value < 1 if open_interval else 0 <= value <= 1
