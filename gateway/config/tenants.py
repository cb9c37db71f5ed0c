"""Who a client key belongs to. A tenant is one client key, or a group of keys declared under
`auth.tenants`; what a client stores or teaches the gateway (stored responses, workload windows,
probe windows, competence, savings) is kept per tenant (docs/concepts/tenants.md).

Tenants are named without their keys, because names appear in admin output and metric labels:
a group by its configured name, a key of `auth.api_keys_env` that no group lists by `key-` and a
digest of the key (`key-3f9c0a61d2b4`). The digest is salted with the windows' namespace and
stretched (PBKDF2), so the name stays the same on every replica and across restarts (what it owns
stays reachable) yet does not help anyone guess the key; position in the list would move a key's
stored responses to another key when the list is edited. With no keys at all the gateway is open
and everyone is the one tenant `open`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.config.schema import AuthConfig

OPEN_TENANT: Final = "open"  # the one tenant of a gateway without client keys
KEY_TENANT_PREFIX: Final = "key-"
_DIGEST_ITERATIONS: Final = 10_000  # ~7 ms per key, once per (re)load: a guess costs as much
_DIGEST_BYTES: Final = 6  # 12 hex digits: distinct for any realistic number of keys


def key_tenant_name(key: str, namespace: str) -> str:
    """The tenant name of a key no group lists: stable for the key and namespace, and not the key."""
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), f"recserve-tenant:{namespace}".encode(), _DIGEST_ITERATIONS)
    return KEY_TENANT_PREFIX + digest[:_DIGEST_BYTES].hex()


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One accepted client key and the tenant it belongs to."""

    key: bytes
    tenant: str


@dataclass(frozen=True, slots=True)
class Tenants:
    """The client keys a gateway accepts, each with its tenant; none → open (one tenant)."""

    keys: tuple[ClientKey, ...]
    names: tuple[str, ...]  # every tenant that has at least one key, in config order

    @classmethod
    def of(cls, auth: AuthConfig, namespace: str) -> Tenants:
        """Read the keys from the environment: groups first, then the bare keys no group lists."""
        owned: dict[str, str] = {}
        for name, group in auth.tenant_keys().items():
            for key in group:
                owned.setdefault(key, name)  # one owner per key (the config check refuses two)
        for key in auth.client_keys():
            if key not in owned:
                owned[key] = key_tenant_name(key, namespace)
        entries = tuple(ClientKey(key.encode(), tenant) for key, tenant in owned.items())
        return cls(entries, tuple(dict.fromkeys(entry.tenant for entry in entries)))

    @property
    def open(self) -> bool:
        return not self.keys

    def owner_of(self, presented: str) -> str | None:
        """The tenant of the presented key, or None when no key matches. Every configured key is
        compared (hmac.compare_digest, no early exit), so the time taken says nothing of which matched."""
        candidate = presented.encode()
        owner = None
        for entry in self.keys:
            matched = hmac.compare_digest(candidate, entry.key)
            owner = entry.tenant if matched else owner
        return owner

    def scope_of(self, tenant: str) -> str:
        """What a tenant's windows and stored responses are keyed under: "" (nothing kept apart) on an
        open gateway, whose one tenant keeps the keys a gateway without tenants always had."""
        return "" if tenant == OPEN_TENANT else tenant

    def scopes(self) -> Sequence[str]:
        """Every tenant's scope, the shared one ("") first."""
        return ["", *self.names]
