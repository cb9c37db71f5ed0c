"""The config's `tiers[]` entries: where a tier is, how it is called and bounded, what it costs."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import RESERVED_TIER_NAMES, _Strict


class LocalTierConfig(_Strict):
    """A tier this machine runs itself with llama.cpp (`recserve tiers up`)."""

    model: str
    port: int = Field(ge=1, le=65535)
    # Unset: `tiers up` derives threads, CPU affinity and polling from the cores it may use
    # (gateway.local.placement); set: exactly this many threads, not pinned.
    threads: int | None = Field(None, ge=1, le=256)
    ctx_size: int = Field(2048, ge=256)
    parallel: int = Field(1, ge=1, le=64)
    # --no-cache-prompt: the same prompt always gets the same logprobs (so decisions replay exactly);
    # false keeps llama.cpp's prompt cache: a repeated prompt's TTFT drops (~310 → ~29 ms on the device).
    deterministic: bool = True


class TierLimits(_Strict):
    """Bounds on what a tier may send back. A tier crossing one gets a fault of kind `limit`: a lower
    tier escalates, the last tier is a 502 (or a streamed answer's error event)."""

    max_header_bytes: int = Field(64 * 1024, ge=1024)  # the response's whole header section
    max_headers: int = Field(128, ge=8)
    # A whole answer, and a stream while the gateway buffers it to judge it: on the wire and again
    # after gzip/deflate inflation. A stream being served live is bounded in time instead.
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    max_sse_line_bytes: int = Field(1024 * 1024, ge=4096)  # one line of a server-sent event stream
    # JSON objects and arrays in a whole answer, and in a stream while it is buffered: counted before
    # parsing, since each costs event-loop time however small. One per 16 bytes of max_body_bytes: an
    # honest answer (logprobs with 20 alternatives per token) needs one per 20-30 bytes.
    max_json_containers: int = Field(500_000, ge=1000)


class TierPrice(_Strict):
    """What a tier charges, in USD per million tokens (for the savings the gateway reports)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class TierConfig(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base_url: str
    model: str = Field(min_length=1)
    provider: Literal["openai", "litellm"] = "openai"
    api_key_env: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_concurrency: int = Field(64, ge=1)
    queue_timeout_s: float = Field(0.5, ge=0)
    min_budget_s: float = Field(0.0, ge=0)
    limits: TierLimits = TierLimits()
    # The tier is another RecServe gateway: its x-recserve-path and x-recserve-uplink-tokens are
    # read (validated and capped). Any other tier's x-recserve-* headers are ignored.
    recserve_gateway: bool = False
    local: LocalTierConfig | None = None
    price: TierPrice | None = None  # unset: the tier costs nothing (e.g. it runs on the user's own machine)
    uplink_weight: float = Field(1.0, ge=0)  # the cost of shipping one prompt token to this tier
    # How tool requests reach the tier: `native` passes `tools` through; `constrained` adds a JSON Schema
    # built from the tools as `response_format` and turns the JSON answer back into `tool_calls`.
    tool_mode: Literal["native", "constrained"] = "native"
    # Under `constrained`, how calls are written: always a list, or one call unless several are needed.
    tool_call_form: Literal["list", "call_or_list"] = "list"
    # The tier is llama.cpp's llama-server (unset: when `local` is set). It then gets every stop
    # sequence (others get OpenAI's four) and is asked which one ended an answer.
    llama_server: bool | None = None

    @property
    def is_llama_server(self) -> bool:
        return self.llama_server if self.llama_server is not None else self.local is not None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_TIER_NAMES:
            raise ValueError(f"'{value}' is reserved for a policy name")
        return value

    @model_validator(mode="after")
    def _call_form_needs_constrained(self) -> TierConfig:
        if "tool_call_form" in self.model_fields_set and self.tool_mode != "constrained":
            raise ValueError("tool_call_form applies only to tool_mode: constrained")
        return self

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def served_model(self) -> str:
        """The model name clients see: litellm's provider prefix ("anthropic/") is routing, not a name."""
        return self.model.split("/", 1)[-1] if self.provider == "litellm" else self.model
