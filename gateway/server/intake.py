"""What happens before a request is understood: key check, size limit, content type, JSON parsing."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from gateway import jsonio
from gateway.errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_for(request: Request) -> str:
    """The client's x-request-id when it is sane, else a fresh one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return f"req_{uuid.uuid4().hex}"


def check_api_key(request: Request, keys: Sequence[str]) -> None:
    """Bearer-key check, constant time per key and over all keys; no keys configured → open."""
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
    candidate = presented.strip().encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    if not matched:
        raise AuthenticationFailed("Incorrect API key provided.")


async def read_json_body(request: Request, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """The request body as a JSON object, refusing wrong types, oversize bodies and deep nesting."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json (got '{media_type or 'none'}')."
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than the limit of {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request body is larger than the limit of {max_bytes} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = jsonio.loads(raw)
    except RecursionError:
        raise InvalidRequest("Request body is nested too deeply.", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    if _depth_exceeds(data, max_depth):
        raise InvalidRequest(f"Request body is nested deeper than {max_depth} levels.", code="invalid_json")
    return data


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return False
