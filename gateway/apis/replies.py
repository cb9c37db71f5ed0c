"""The two kinds of answer every API sends: a JSON body written with orjson, and an event stream
that stops, and closes its source, as soon as the client disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from gateway import jsonio
from gateway.errors import UpstreamFailed


class AnswerResponse(JSONResponse):
    """A completion answer, serialised with orjson (Starlette's JSONResponse uses the stdlib)."""

    def render(self, content: Any) -> bytes:
        try:
            return jsonio.dumps_for_client(content)
        except (TypeError, ValueError, RecursionError):  # a tier's answer nested past what JSON writers take
            raise UpstreamFailed("The tier's answer cannot be passed on: it is nested too deeply.") from None


class EventStreamResponse(Response):
    """An SSE response that stops, and closes its source, as soon as the client disconnects.

    What Starlette's StreamingResponse does, with one plain task watching for the disconnect
    instead of an anyio task group: that group was a measurable share of a stream's cost before
    its first byte (bench/NOTES.md).
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        # Not Response.__init__: it renders an empty body and would announce content-length 0.
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._events = events

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        streamer = asyncio.current_task()
        assert streamer is not None
        state = {"finished": False, "left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["finished"]:
                state["left"] = True
                streamer.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self._events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            state["finished"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["left"]:
                raise
            streamer.uncancel()  # the client left: there is no one to answer
        finally:
            state["finished"] = True
            watcher.cancel()
            await _close(self._events)


async def _close(events: AsyncIterator[bytes]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
