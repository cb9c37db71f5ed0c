"""Cancel a request's work when its client leaves before the answer starts.

Without this, a client that gives up mid-cascade leaves the tier call running to its timeout and
then offloaded to the next tier, for nobody. After the answer has started, EventStreamResponse
watches for the disconnect itself.

Watching costs a task per request; a request answered within WATCH_AFTER_S never pays it (the
gateway's own hot path stays free of it), a longer one is cancelled at most WATCH_AFTER_S late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Message, Receive

WATCH_AFTER_S = 0.02
CLIENT_LEFT_STATE = "client_left"  # set in the request's scope state: the access log says 499
T = TypeVar("T")


class ClientLeft(Exception):
    """The client disconnected before the answer started: there is no one to answer."""


class DisconnectWatch:
    """Wraps an ASGI `receive`; once the request body is read, a client disconnect cancels `run`."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._body_read = False
        self._left = False
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._owner: asyncio.Task[object] | None = None

    async def receive(self) -> Message:
        """The receive the route uses: passes messages on and notes when the body is complete."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._left = True
        elif not message.get("more_body", False):
            self._body_read = True
        return message

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work`; raise ClientLeft instead if the client disconnects first."""
        loop = asyncio.get_running_loop()
        self._owner = asyncio.current_task()
        self._timer = loop.call_later(WATCH_AFTER_S, self._start)
        try:
            return await work
        except asyncio.CancelledError:
            if not self._left or self._owner is None:
                raise
            self._owner.uncancel()
            raise ClientLeft() from None
        finally:
            self._stop()

    def _start(self) -> None:
        self._timer = None
        if not self._body_read:  # the route is still reading the body: two readers would race
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)
            return
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        # After the body, uvicorn's receive() only ever returns http.disconnect.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._left = True
        if self._owner is not None:
            self._owner.cancel()

    def _stop(self) -> None:
        self._owner = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
