"""Real servers for tests: an ASGI app in a real uvicorn on a background thread, and port helpers."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now. Another process may take it before use; fine on a test machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http_ok(url: str, timeout: float = 10.0) -> httpx.Response:
    """Poll `url` until it answers 2xx; TimeoutError (with the last failure) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    with httpx.Client(timeout=1.0) as client:
        while True:
            try:
                response = client.get(url)
                if response.is_success:
                    return response
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url} not ok within {timeout}s: {last}")
            time.sleep(0.02)


class UvicornThread:
    """`app` served by a real uvicorn.Server on a background thread (own event loop).

    uvicorn skips signal handlers off the main thread, so stopping is `should_exit`, which lets
    the app's lifespan shutdown run."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None, **config: Any) -> None:
        self.host = host
        self.port = port or free_port(host)
        config.setdefault("log_level", "warning")
        # uvloop fails to close a loop on a non-main thread while sockets linger (EBUSY).
        config.setdefault("loop", "asyncio")
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, **config))
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # Startup runs the app's lifespan, which imports a tier's backend: litellm alone took 17 s to import on
    # a 2-core machine with both cores busy (3-5 s idle). A bound on the harness, not on the product.
    def start(self, timeout_s: float = 60.0) -> Self:
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive():  # startup failed (port taken, lifespan error): uvicorn logged why
                self._thread = None
                raise RuntimeError(f"uvicorn on port {self.port} exited during startup")
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"uvicorn on port {self.port} not started within {timeout_s}s")
            time.sleep(0.005)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # a connection that will not drain: stop waiting for it
            self.server.force_exit = True
            self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
