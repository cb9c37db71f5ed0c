"""The config's shared building blocks: strict models and the names no tier may take."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

RESERVED_TIER_NAMES = frozenset({"recserve", "casserve", "quality"})
POLICY_NAMES = ("recserve", "casserve", "quality")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    # extra="forbid": a misspelt key is an error with its path, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)
