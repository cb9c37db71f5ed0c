"""A deterministic OpenAI-compatible LLM tier on loopback, scripted by the request text.

Every test and benchmark talks to tiers through real sockets, so the gateway's HTTP client, pool,
timeouts and fault handling are exercised for real. See `tier_script` for the directive grammar.

    tier = ThreadedTier("device").start()      # sync tests;  `async with ScriptedTier(...)` in async ones
    ... POST {tier.base_url}/chat/completions with "[device:0.42]" in a message ...
    tier.requests[-1].json                      # what the gateway forwarded
    tier.stop()

With `tokenizer=True` the tier also serves llama-server's `/apply-template` and `/tokenize` at its
root (`render_template`: a ChatML-like rendering; one token per whitespace-separated word), obeying
the same directives (`status=`, `sleep=`, `garbage`, `reset`) found in the text it is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from tests.support.http11 import BadRequest, ClientGone, Connection, Request
from tests.support.openai_shapes import (
    Chunks,
    Reply,
    chat_body,
    chat_chunks,
    completion_body,
    completion_chunks,
    embeddings_body,
    error_body,
)
from tests.support.tier_script import ScriptError, parse_script, request_text

_GENERATE = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
_INFO = {"/v1/models", "/health"}
_TOKENIZER = {"/apply-template", "/tokenize"}
Header = tuple[str, str]
_JSON: Header = ("content-type", "application/json")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the tier received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # the parsed body; None when empty or not JSON
    peer: str  # client "host:port": equal for requests on one keep-alive connection


def _dumps(body: Any) -> bytes:
    # allow_nan: the `nan` directive must put a bare NaN on the wire, as Python servers do.
    return json.dumps(body, allow_nan=True, separators=(",", ":")).encode()


class ScriptedTier:
    """The server, on the running event loop. `requests` records every request received."""

    def __init__(
        self, name: str, model: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
        tokenizer: bool = False,
    ) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.model = model or name
        self.host = host
        self.port = port
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # unexpected server-side exceptions, to debug the tier itself
        self._lock = threading.Lock()  # requests are read from other threads (ThreadedTier)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}/v1"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Idle keep-alive connections would otherwise outlive the server.
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def active_connections(self) -> int:
        """Client connections open right now (idle keep-alive ones included)."""
        return len(self._handlers)

    def recorded(self) -> list[RecordedRequest]:
        """A copy of `requests`, safe to take from another thread."""
        with self._lock:
            return list(self.requests)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        connection = Connection(reader, writer)
        try:
            while await self._serve_one(connection):
                pass
        except ClientGone:
            pass
        except asyncio.CancelledError:
            # Only stop() cancels handlers. Ending normally matters: on 3.11 asyncio's stream callback
            # calls exception() on a cancelled handler task and logs the CancelledError it raises.
            pass
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            self._handlers.discard(task)
            await connection.close()

    async def _serve_one(self, connection: Connection) -> bool:
        """Answer one request; False when the connection must end."""
        try:
            request = await connection.read_request()
        except BadRequest as exc:
            await self._send_json(connection, 400, error_body(400, str(exc)), keep_alive=False)
            return False
        if request is None:
            return False
        body = self._record(request, connection.peer)
        keep_alive = request.keep_alive
        if request.path in _GENERATE and request.method == "POST":
            return await self._generate(connection, request, body, keep_alive)
        if self.tokenizer and request.path in _TOKENIZER and request.method == "POST":
            return await self._tokenize(connection, request.path, body, keep_alive)
        if request.path in _INFO and request.method == "GET":
            info: dict[str, Any] = {"status": "ok"}
            if request.path == "/v1/models":
                model = {"id": self.model, "object": "model", "created": 0, "owned_by": "scripted-tier"}
                info = {"object": "list", "data": [model]}
            await self._send_json(connection, 200, info, keep_alive=keep_alive)
        elif request.path in _GENERATE | _INFO:
            await self._send_json(
                connection, 405, error_body(405, "method not allowed"), keep_alive=keep_alive
            )
        else:
            await self._send_json(
                connection, 404, error_body(404, f"no route {request.path}"), keep_alive=keep_alive
            )
        return keep_alive

    def _record(self, request: Request, peer: str) -> Any:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        recorded = RecordedRequest(request.method, request.path, request.headers, request.body, body, peer)
        with self._lock:
            self.requests.append(recorded)
        return body

    async def _generate(self, connection: Connection, request: Request, body: Any, keep_alive: bool) -> bool:
        if not isinstance(body, dict):
            await self._send_json(
                connection, 400, error_body(400, "body must be a JSON object"), keep_alive=keep_alive
            )
            return keep_alive
        text = request_text(request.path, body)
        try:
            script = parse_script(self.name, text)
        except ScriptError as exc:
            await self._send_json(
                connection, 400, error_body(400, f"{self.name}: {exc}"), keep_alive=keep_alive
            )
            return keep_alive
        headers = script.headers
        if script.sleep_s and not await connection.sleep_unless_gone(script.sleep_s):
            return False
        if script.reset:
            connection.reset()
            raise ClientGone  # nothing more may touch this connection
        if script.status is not None:
            error = error_body(script.status, f"scripted {script.status}")
            await self._send_json(connection, script.status, error, keep_alive=keep_alive, headers=headers)
            return keep_alive
        if request.path == "/v1/embeddings":
            await self._send_json(
                connection, 200, embeddings_body(self.model, body), keep_alive=keep_alive, headers=headers
            )
            return keep_alive
        is_chat = request.path == "/v1/chat/completions"
        reply = Reply(
            tier=self.name,
            model=self.model,
            response_id=f"{'chatcmpl' if is_chat else 'cmpl'}-{self.name}-{next(self._ids)}",
            created=int(time.time()),
            request=body,
            script=script,
            prompt_tokens=len(text.split()),
        )
        if body.get("stream") is True:
            return await self._stream(
                connection, chat_chunks(reply) if is_chat else completion_chunks(reply), reply, keep_alive
            )
        if script.garbage:
            await connection.send(200, [_JSON, *headers], b"not json{", keep_alive=keep_alive)
            return keep_alive
        answer = chat_body(reply) if is_chat else completion_body(reply)
        await self._send_json(connection, 200, answer, keep_alive=keep_alive, headers=headers)
        return keep_alive

    async def _tokenize(self, connection: Connection, path: str, body: Any, keep_alive: bool) -> bool:
        """llama-server's `/apply-template` (the prompt text) or `/tokenize` (its tokens)."""
        if not isinstance(body, dict):
            await self._send_json(connection, 400, error_body(400, "body must be a JSON object"), keep_alive=keep_alive)
            return keep_alive
        rendering = path == "/apply-template"
        text = request_text("/v1/chat/completions", body) if rendering else str(body.get("content", ""))
        try:
            script = parse_script(self.name, text)
        except ScriptError as exc:
            await self._send_json(connection, 400, error_body(400, f"{self.name}: {exc}"), keep_alive=keep_alive)
            return keep_alive
        if script.sleep_s and not await connection.sleep_unless_gone(script.sleep_s):
            return False
        if script.reset:
            connection.reset()
            raise ClientGone
        if script.status is not None:
            await self._send_json(connection, script.status, error_body(script.status, f"scripted {script.status}"),
                                  keep_alive=keep_alive)
            return keep_alive
        if script.garbage:
            await connection.send(200, [_JSON], b"not json{", keep_alive=keep_alive)
            return keep_alive
        answer = ({"prompt": render_template(body)} if rendering
                  else {"tokens": list(range(len(str(body.get("content", "")).split())))})
        await self._send_json(connection, 200, answer, keep_alive=keep_alive)
        return keep_alive

    async def _stream(self, connection: Connection, plan: Chunks, reply: Reply, keep_alive: bool) -> bool:
        chunks, first_token = plan
        sse = ("content-type", "text/event-stream")
        connection.start_chunked(
            200, [sse, ("cache-control", "no-cache"), *reply.script.headers], keep_alive=keep_alive
        )
        events = (
            [b"data: not json{\n\n"]
            if reply.script.garbage
            else [b"data: %b\n\n" % _dumps(c) for c in chunks]
        )
        for index, event in enumerate(events):
            await connection.send_chunk(event)
            if index != first_token:
                continue
            if reply.script.stall_s and not await connection.sleep_unless_gone(reply.script.stall_s):
                return False
            if reply.script.cut:
                return False  # the caller closes the socket: the body ends without its last chunk
        await connection.send_chunk(b"data: [DONE]\n\n")
        await connection.end_chunked()
        return keep_alive

    @staticmethod
    async def _send_json(
        connection: Connection, status: int, body: Any, *, keep_alive: bool, headers: Sequence[Header] = ()
    ) -> None:
        await connection.send(status, [_JSON, *headers], _dumps(body), keep_alive=keep_alive)


def render_template(body: dict[str, Any]) -> str:
    """A chat body as one prompt text, ChatML-like: each message's role and content (tool calls as
    JSON), the tools as JSON, then the assistant's turn opened."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        text = content if isinstance(content, str) else ""
        if message.get("tool_calls"):
            text += json.dumps(message["tool_calls"])
        parts.append(f"<|im_start|>{message.get('role')}\n{text}<|im_end|>\n")
    if body.get("tools"):
        parts.append(f"<|im_start|>tools\n{json.dumps(body['tools'])}<|im_end|>\n")
    return "".join(parts) + "<|im_start|>assistant\n"


class ThreadedTier:
    """A ScriptedTier on its own thread and event loop, for synchronous tests and fixtures."""

    def __init__(self, name: str, model: str | None = None, *, tokenizer: bool = False) -> None:
        self._tier = ScriptedTier(name, model, tokenizer=tokenizer)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def name(self) -> str:
        return self._tier.name

    @property
    def model(self) -> str:
        return self._tier.model

    @property
    def port(self) -> int:
        return self._tier.port

    @property
    def base_url(self) -> str:
        return self._tier.base_url

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot: later requests do not appear in a list already taken."""
        return self._tier.recorded()

    @property
    def errors(self) -> list[str]:
        return list(self._tier.errors)

    @property
    def active_connections(self) -> int:
        return self._tier.active_connections

    def clear(self) -> None:
        self._tier.clear()

    def start(self, timeout_s: float = 10.0) -> Self:
        self._thread = threading.Thread(target=self._run, name=f"scripted-tier-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"scripted tier {self.name} did not start within {timeout_s}s")
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"scripted tier {self.name} failed to start") from self._failure
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self._tier.start()
        except BaseException as exc:  # handed to start(); raising here would only print in this thread
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._tier.stop()
