"""A tier's own count of a chat prompt's tokens, from llama.cpp's llama-server: `POST /apply-template`
renders the chat body with the model's chat template, as the tier does before it answers (tools
included), and `POST /tokenize` tokenizes that text as the tier tokenizes a prompt (special tokens
added and parsed). The count is the `prompt_tokens` the tier reports when it answers the same body.
Both routes sit at the server's root, beside `/v1`.

Each count is bounded like every tier call: in time (`COUNT_TIMEOUT_S` for both requests) and in size
(the tier's `limits`). A tier that cannot count gives None, and the caller estimates instead. One
without these routes (not llama-server, or an old one), or out of reach, is not asked again for
`RETRY_AFTER_S`; a body it cannot render (an image for a text-only model) costs that request only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Final

from gateway import jsonio
from gateway.config.schema import TierConfig
from gateway.upstream import http1
from gateway.upstream.tool_modes import constrained_body

COUNT_TIMEOUT_S: Final = 2.0  # both routes answer from the HTTP thread, not the generation queue
RETRY_AFTER_S: Final = 60.0
_MISSING: Final = frozenset({404, 405, 501})  # the route does not exist there


class _CannotCount(Exception):
    def __init__(self, rest: bool) -> None:
        super().__init__()
        self.rest = rest  # leave the tier alone for a while


def server_root(base_url: str) -> str:
    """Where llama-server's own routes are: the tier's OpenAI base URL without its `/v1`."""
    return base_url.removesuffix("/v1")


class TierTokenizer:
    """Counts chat prompts' tokens with one tier's tokenizer, over a small pool of its own."""

    def __init__(self, tier: TierConfig) -> None:
        headers = {"content-type": "application/json", "accept": "application/json"}
        key = tier.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        bounds = tier.limits
        limits = http1.Limits(header_bytes=bounds.max_header_bytes, headers=bounds.max_headers,
                              body_bytes=bounds.max_body_bytes, line_bytes=bounds.max_sse_line_bytes)
        self._pool = http1.Pool(server_root(tier.base_url), limit=2, headers=headers, limits=limits)
        self._model = tier.model
        self._constrained = tier.tool_mode == "constrained"
        self._resting_until = 0.0

    async def count(self, body: Mapping[str, Any]) -> int | None:
        """The tokens of `body`'s prompt as this tier counts them; None when it cannot say."""
        if time.monotonic() < self._resting_until:
            return None
        # What the tier is really sent: a constrained tier gets the tools in its system message.
        asked = (constrained_body(dict(body)) if self._constrained else None) or body
        try:
            async with asyncio.timeout(COUNT_TIMEOUT_S):
                rendered = await self._post("apply-template", {**asked, "model": self._model})
                prompt = rendered.get("prompt")
                if not isinstance(prompt, str):
                    raise _CannotCount(rest=True)
                counted = await self._post("tokenize", {"content": prompt, "add_special": True,
                                                        "parse_special": True})
        except (TimeoutError, http1.HttpError):
            self._resting_until = time.monotonic() + RETRY_AFTER_S
            return None
        except _CannotCount as refused:
            if refused.rest:
                self._resting_until = time.monotonic() + RETRY_AFTER_S
            return None
        tokens = counted.get("tokens")
        if not isinstance(tokens, list):
            self._resting_until = time.monotonic() + RETRY_AFTER_S
            return None
        return len(tokens)

    async def _post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        response = await self._pool.send("POST", path, jsonio.dumps(payload), {})
        if response.status != 200:
            raise _CannotCount(rest=response.status in _MISSING)
        try:
            answer = jsonio.loads(response.body)
        except (ValueError, RecursionError):
            raise _CannotCount(rest=True) from None
        if not isinstance(answer, dict):
            raise _CannotCount(rest=True)
        return answer

    async def aclose(self) -> None:
        await self._pool.aclose()
