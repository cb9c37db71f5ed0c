"""`python -m bench.request_path`: the rooms a request walks through, and how often it turns back.

Serves one non-streamed request per API (chat/completions, Responses, Messages) through the gateway
in process (httpx's ASGI transport) to a scripted tier on loopback, and records every call from one
of the gateway's rooms into another (sys.setprofile). A room is a subpackage of `gateway/` (or a
module, with `--by module`); the shared contract modules at the root (protocol, errors, jsonio, sse)
and the standard library are walls, not rooms. A move is a distinct caller→callee pair of rooms; it
is a move *back* when the callee was first entered before the caller, i.e. the path returns to a room
it already passed instead of handing on. Reports rooms, moves and moves back per API; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import httpx

from tests.conftest import base_config
from tests.support.scripted_tier import ThreadedTier

CONTRACTS = frozenset({"protocol", "errors", "jsonio", "sse", "__init__"})
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "recserve", "messages": [{"role": "user", "content": "Hello"}],
                                      "max_tokens": 8}),
    "responses": ("/v1/responses", {"model": "recserve", "input": "Hello", "max_output_tokens": 8}),
    "messages": ("/v1/messages", {"model": "recserve", "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "Hello"}]}),
}


def room_of(module: str, by: str) -> str | None:
    """The room a module belongs to; None for a wall or code that is not ours."""
    parts = module.split(".")
    if parts[0] == "policies":
        return "policies" if by == "package" else module
    if parts[0] != "gateway" or len(parts) < 2 or (parts[-1] in CONTRACTS and len(parts) == 2):
        return None
    if by == "module":
        return ".".join(parts[1:])
    if parts[1] == "apis" and len(parts) > 3:
        return ".".join(parts[1:3])  # apis.openai, apis.responses, apis.messages
    return parts[1] if len(parts) > 2 else None


class PathRecorder:
    """Rooms in the order first entered, and the distinct room-to-room calls."""

    def __init__(self, by: str) -> None:
        self.by = by
        self.order: list[str] = []
        self.moves: set[tuple[str, str]] = set()

    def profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        callee = room_of(frame.f_globals.get("__name__", ""), self.by)
        if callee is None:
            return
        caller_frame = frame.f_back
        caller = None
        while caller_frame is not None and caller is None:  # the nearest room up the stack
            caller = room_of(caller_frame.f_globals.get("__name__", ""), self.by)
            caller_frame = caller_frame.f_back
        if callee not in self.order:
            self.order.append(callee)
        if caller is not None and caller != callee:
            self.moves.add((caller, callee))

    def back_moves(self) -> list[tuple[str, str]]:
        rank = {room: i for i, room in enumerate(self.order)}
        return sorted(m for m in self.moves if rank[m[1]] < rank[m[0]])


def _create_app() -> Callable[..., Any]:
    try:
        from gateway.server.app import create_app
    except ImportError:  # the flat layout
        from gateway.app import create_app  # type: ignore[no-redef]
    return create_app  # type: ignore[no-any-return]


def _parse_config() -> Callable[..., Any]:
    try:
        from gateway.config.loading import parse_config
    except ImportError:
        from gateway.config import parse_config  # type: ignore[no-redef,attr-defined]
    return parse_config  # type: ignore[no-any-return]


async def walk(api: str, by: str) -> PathRecorder:
    tiers = {name: ThreadedTier(name, f"{name}-model").start() for name in ("device", "edge", "cloud")}
    try:
        config = _parse_config()(base_config(tiers))
        app = _create_app()(config)
        path, body = REQUESTS[api]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                await client.post(path, json=body)  # warm: first-call imports and caches are not the path
                recorder = PathRecorder(by)
                sys.setprofile(recorder.profile)
                try:
                    answer = await client.post(path, json=body)
                finally:
                    sys.setprofile(None)
                answer.raise_for_status()
        return recorder
    finally:
        for tier in tiers.values():
            tier.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--by", choices=("package", "module"), default="package")
    parser.add_argument("--verbose", action="store_true", help="list the rooms and the moves back")
    args = parser.parse_args()
    print(f"| API | rooms | moves | moves back |  (rooms by {args.by})")
    for api in REQUESTS:
        recorder = asyncio.run(walk(api, args.by))
        print(f"| {api} | {len(recorder.order)} | {len(recorder.moves)} | {len(recorder.back_moves())} |")
        if args.verbose:
            print("   path:", " > ".join(recorder.order))
            print("   back:", ", ".join(f"{a}->{b}" for a, b in recorder.back_moves()))


if __name__ == "__main__":
    main()
