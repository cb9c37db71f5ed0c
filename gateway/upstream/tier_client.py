"""The Backend a tier is called through: its provider's backend, told what llama-server can say,
in the tier's tool mode."""

from __future__ import annotations

from gateway.config.schema import TierConfig
from gateway.upstream.backends import Backend, LiteLLMBackend, OpenAICompatibleBackend
from gateway.upstream.llama_stops import LlamaServerStops
from gateway.upstream.tool_modes import ConstrainedTools


def build_backend(tier: TierConfig) -> Backend:
    backend: Backend = LiteLLMBackend(tier) if tier.provider == "litellm" else OpenAICompatibleBackend(tier)
    if tier.provider == "openai" and tier.is_llama_server:
        backend = LlamaServerStops(backend)
    if tier.tool_mode == "constrained":
        return ConstrainedTools(backend, tier.tool_call_form)
    return backend
