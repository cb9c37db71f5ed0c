"""Tenants from `auth`: who owns which key, their names (never a key), and the config's checks."""

from __future__ import annotations

import pytest

from gateway.config.loading import ConfigError, parse_config
from gateway.config.tenants import OPEN_TENANT, Tenants, key_tenant_name
from policies.base import Scope

TIERS = [{"name": "device", "base_url": "http://127.0.0.1:1/v1", "model": "d"},
         {"name": "cloud", "base_url": "http://127.0.0.1:3/v1", "model": "c"}]
KEYS_ENV, TEAM_A_ENV, TEAM_B_ENV = "RECSERVE_T_KEYS", "RECSERVE_T_TEAM_A", "RECSERVE_T_TEAM_B"


def auth(**tenants: str) -> dict[str, object]:
    return {"tiers": TIERS, "auth": {"api_keys_env": KEYS_ENV,
                                     "tenants": {name: {"keys_env": env} for name, env in tenants.items()}}}


def tenants_of(data: dict[str, object], namespace: str = "recserve") -> Tenants:
    return Tenants.of(parse_config(data).auth, namespace)


def test_groups_and_single_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_ENV, "sk-solo, sk-a2 ,sk-other")
    monkeypatch.setenv(TEAM_A_ENV, "sk-a1,sk-a2")  # sk-a2 is in both: the group has it
    tenants = tenants_of(auth(**{"team-a": TEAM_A_ENV, "team-b": TEAM_B_ENV}))  # team-b's variable is unset
    assert not tenants.open
    assert [tenants.owner_of(key) for key in ("sk-a1", "sk-a2")] == ["team-a", "team-a"]
    solo, other = tenants.owner_of("sk-solo"), tenants.owner_of("sk-other")
    assert solo == key_tenant_name("sk-solo", "recserve") and other == key_tenant_name("sk-other", "recserve")
    assert solo != other and solo is not None and solo.startswith("key-") and len(solo) == len("key-") + 12
    assert "solo" not in solo  # a name, not the key
    assert tenants.owner_of("sk-a") is None and tenants.owner_of("") is None
    assert tenants.names == ("team-a", solo, other)  # groups first; team-b has no key
    # The same key, the same name on every replica and after a restart; another deployment, another name.
    assert tenants_of(auth(**{"team-a": TEAM_A_ENV})).owner_of("sk-solo") == solo
    assert tenants_of(auth(**{"team-a": TEAM_A_ENV}), "elsewhere").owner_of("sk-solo") != solo


def test_no_keys_is_one_open_tenant_with_the_keys_of_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    tenants = tenants_of(auth(**{"team-a": TEAM_A_ENV}))
    assert tenants.open and tenants.names == ()
    assert tenants.scope_of(OPEN_TENANT) == ""  # an open gateway keys windows as before tenants
    assert Scope("generation", "tagger", 0, tenants.scope_of(OPEN_TENANT)).name == "generation/tagger"


def test_scope_names_carry_the_tenant() -> None:
    assert Scope("generation", "generation", 0, "team-a").name == "team-a~generation"
    assert Scope("classification", "sst2", 8, "team-a").name == "team-a~classification/sst2@prefix8"
    assert Scope("classification", "sst2", 8, "team-a").whole() == Scope("classification", "sst2", 0, "team-a")
    # `~` is in no workload name: a client cannot spell another tenant's scope.
    assert parse_config({"tiers": TIERS, "policy": {"shared_workloads": ["faq"]}}).policy.shared_workloads == ["faq"]
    with pytest.raises(ConfigError):
        parse_config({"tiers": TIERS, "policy": {"shared_workloads": ["team-a~faq"]}})


def test_a_key_in_two_groups_and_reserved_names_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEAM_A_ENV, "sk-shared-by-mistake")
    monkeypatch.setenv(TEAM_B_ENV, "sk-b,sk-shared-by-mistake")
    with pytest.raises(ConfigError) as caught:
        parse_config(auth(**{"team-a": TEAM_A_ENV, "team-b": TEAM_B_ENV}))
    message = " ".join(caught.value.errors)
    assert "team-a" in message and TEAM_B_ENV in message and "sk-" not in message  # named, never shown
    for name in ("open", "key-123", "bad name", "-dash"):
        with pytest.raises(ConfigError):
            parse_config(auth(**{name: TEAM_A_ENV}))
