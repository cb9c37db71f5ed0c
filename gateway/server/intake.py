"""The one intake every /v1 request passes before an API sees it: request id, client key, header
size and rate limit, the gateway chain, and the JSON body, parsed once. What comes out is an
`Admission` (gateway/protocol.py); what is refused leaves as a GatewayError in the shape of the API
the request came by (the routes render it)."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request

from gateway import jsonio
from gateway.config.schema import GatewayConfig
from gateway.config.tenants import OPEN_TENANT, Tenants
from gateway.errors import (
    AuthenticationFailed,
    InvalidRequest,
    LoopDetected,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gateway.protocol import HOPS_HEADER, VIA_HEADER, Admission
from gateway.server.ratelimit import admit_client

_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Intake:
    """What a route's intake checks beyond the request id and the client key."""

    body: bool = False  # parse the JSON body (and refuse a missing or malformed one)
    limited: bool = False  # header size limit and the client's rate limit
    chained: bool = False  # the hop count and loop check of chained gateways (routes through the cascade)


READ: Final = Intake()
LIMITED_BODY: Final = Intake(body=True, limited=True)
CASCADE: Final = Intake(body=True, limited=True, chained=True)


def request_id_for(request: Request) -> str:
    """The client's x-request-id when it is sane, else a fresh one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return f"req_{uuid.uuid4().hex}"


def presented_key(request: Request) -> str | None:
    """The client key a request presents: `Authorization: Bearer <key>`, else Anthropic's `x-api-key`.
    The one place a key is read: the key check, the rate limit and the key's default workload use it."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return request.headers.get("x-api-key", "").strip() or None


def check_api_key(presented: str | None, tenants: Tenants) -> str:
    """The tenant of the presented key (constant time per key and over all keys); no keys
    configured → open, and everyone is its one tenant."""
    if tenants.open:
        return OPEN_TENANT
    if presented is None:
        raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>').")
    tenant = tenants.owner_of(presented)
    if tenant is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    return tenant


async def admit(request: Request, config: GatewayConfig, tenants: Tenants, intake: Intake) -> Admission:
    """Pass the door or raise: request id, key, limits, chain, body — in that order, each once."""
    started = time.monotonic()
    request_id = request_id_for(request)
    request.state.request_id = request_id
    key = presented_key(request)
    tenant = check_api_key(key, tenants)
    if intake.limited:
        await admit_client(request, config, key)
    hops, via = 0, []
    if intake.chained:
        hops = _incoming_hops(request, config.server.max_hops)
        via = _incoming_via(request)
    body: dict[str, Any] = {}
    if intake.body:
        body = await read_json_body(request, config.server.max_body_bytes, config.server.max_json_depth)
    return Admission(request_id, started, hops, via, key, body, tenant)


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


def _incoming_via(request: Request) -> list[str]:
    """The chain so far plus us; a request that already passed this gateway is a loop."""
    instance_id: str = request.app.state.instance_id
    via = [part.strip() for part in request.headers.get(VIA_HEADER, "").split(",") if part.strip()]
    if instance_id in via:
        raise LoopDetected(f"Loop detected: this request already passed gateway '{instance_id}' "
                           f"(via {', '.join(via)}); check the tiers' base_url chain.")
    return [*via, instance_id]


def _incoming_hops(request: Request, max_hops: int) -> int:
    """Hops this request already made through chained gateways; refuse once the limit is reached."""
    raw = request.headers.get(HOPS_HEADER, "0").strip()
    # Digits only: int() would also take "-5", "+3", "1_0" or "٣", and a negative count defeats max_hops.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3:
        raise InvalidRequest(f"Header {HOPS_HEADER} must be a non-negative integer below 1000.",
                             param=HOPS_HEADER, code="invalid_header")
    hops = int(raw)
    if hops >= max_hops:
        raise LoopDetected(f"Hop limit reached: this request already passed {hops} gateways "
                           f"(server.max_hops = {max_hops}); is there a loop in the tier chain?")
    return hops
