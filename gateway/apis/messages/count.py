"""POST /v1/messages/count_tokens: the input tokens a Messages request would cost at the top tier.

What is counted is what that tier would be sent: the request becomes the chat body every tier is
asked with (`request.prompt_body`: the system prompt, the messages with their tool calls and tool
results, the tool definitions and `tool_choice`, the answer format). The top tier is the last tier
the request's model may reach (the pinned tier for `recserve/<tier>`).

When that tier is llama-server, it counts: its chat template renders the body and its tokenizer
counts the text (gateway/upstream/tokenizer.py), the `usage.input_tokens` a Messages answer from it
reports. Otherwise, or when it fails to, the count is an estimate: tiktoken's cl100k_base over the
same text (message contents with a few tokens of framing each, tool calls' arguments, tool
definitions and the answer's schema as JSON). `x-recserve-tokenizer` says which it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gateway.apis.messages.request import CountTokensRequest, prompt_body
from gateway.apis.validation import validate
from gateway.cascade.runtime import Runtime
from gateway.protocol import Admission
from gateway.telemetry.tokens import PromptTokenCounter

TOKENIZER_HEADER: Final = "x-recserve-tokenizer"
ESTIMATE: Final = "tiktoken:cl100k_base"


def estimate(tokens: PromptTokenCounter, body: Mapping[str, Any]) -> int:
    """tiktoken's count of the chat body's text: messages, tool calls, tool definitions, answer format."""
    total = tokens.count(body)
    for message in body.get("messages") or ():
        for call in message.get("tool_calls") or ():
            total += tokens.count_text(call["function"]["name"]) + tokens.count_text(call["function"]["arguments"])
    for extra in ("tools", "tool_choice", "response_format"):
        if body.get(extra) is not None:
            total += tokens.count_text(json.dumps(body[extra], ensure_ascii=False))
    return total


async def count_tokens(request: Request, runtime: Runtime, admission: Admission) -> Response:
    parsed = validate(CountTokensRequest, admission.body)
    body = prompt_body(parsed)
    top = runtime.resolve(parsed.model, uses_tools=bool(body.get("tools"))).tiers[-1]
    tokenizer = runtime.tokenizer(top)
    counted = await tokenizer.count(body) if tokenizer is not None else None
    used = f"tier:{top.config.name}" if counted is not None else ESTIMATE
    if counted is None:  # off the event loop: a long prompt takes tiktoken a while
        counted = await asyncio.to_thread(estimate, runtime.tokens, body)
    return JSONResponse({"input_tokens": counted},
                        headers={TOKENIZER_HEADER: used, "x-request-id": admission.request_id})
