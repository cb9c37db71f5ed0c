"""Server-sent events: OpenAI's `data: {json}` events ending with `data: [DONE]` (written for clients,
parsed from tiers), and the named events (`event:` lines) of the Responses and Messages APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway import jsonio

DONE = b"data: [DONE]\n\n"


class StreamBroken(Exception):
    """The stream cannot be read on: cut before [DONE], not JSON, or an error event."""


def named_event(event_type: str, data: dict[str, Any]) -> bytes:
    """One SSE event with an `event:` line (the Anthropic SDK dispatches on it; OpenAI sends it too)."""
    return b"event: " + event_type.encode() + b"\ndata: " + jsonio.dumps_for_client(data) + b"\n\n"


def encode(event: dict[str, Any]) -> bytes:
    """One event for a client (integers beyond ±2^53 written as null; see jsonio.dumps_for_client)."""
    return b"data: " + jsonio.dumps_for_client(event) + b"\n\n"


async def parse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """JSON payloads of the `data:` events until [DONE]; comments and other fields are skipped."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line.strip() or not data:
            continue  # a comment, another field, or a blank line between events
        payload = "\n".join(data)
        data = []
        if payload.strip() == "[DONE]":
            return
        yield _decode(payload)
    if data:  # the last event may lack its blank line
        payload = "\n".join(data)
        if payload.strip() == "[DONE]":
            return
        yield _decode(payload)
    raise StreamBroken("stream ended without [DONE]")


def _decode(payload: str) -> dict[str, Any]:
    try:
        event = jsonio.loads(payload)
    except (ValueError, RecursionError):
        raise StreamBroken("stream event is not JSON (or nested too deeply)") from None
    if not isinstance(event, dict):
        raise StreamBroken("stream event is not a JSON object")
    if "error" in event:
        error = event["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise StreamBroken(f"tier sent an error event: {str(message)[:300]}")
    return event
