"""What a tier says is vetted before a client sees it: redaction of credentials and the grammar of
a chained gateway's path."""

from __future__ import annotations

import pytest

from gateway.upstream.vetting import MAX_MESSAGE_CHARS, redact, upstream_path, upstream_uplink_tokens, valid_path

SECRET = "tier-secret-0123456789abcdef"


@pytest.mark.parametrize("echo", [
    f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {SECRET}\r\n",
    f'{{"headers": {{"Authorization": "Bearer {SECRET}"}}}}',
    f"Authorization={SECRET}",
    f"proxy-authorization: Basic {SECRET}",
    f"bearer {SECRET}",
    f"x-api-key: {SECRET}",
    f'{{"api_key": "{SECRET}"}}',
    f"https://host/v1?apikey={SECRET}&x=1",
    f"password={SECRET}",
    f"access_token: {SECRET}",
])
def test_credentials_are_redacted_wherever_a_server_echoes_them(echo: str) -> None:
    shown = redact(f"upstream refused: {echo}")
    assert SECRET not in shown
    assert SECRET[:12] not in shown
    assert "[redacted]" in shown


def test_known_secrets_and_key_shaped_strings_are_redacted() -> None:
    assert "opaque-value-42" not in redact("echo opaque-value-42 here", ["opaque-value-42"])
    assert "sk-abcdefgh12345678" not in redact("key sk-abcdefgh12345678 is invalid")


def test_ordinary_messages_pass_and_long_ones_are_cut() -> None:
    message = "'temperature' must be between 0 and 2 (got 7)"
    assert redact(message) == message
    long = redact("x" * 100_000)
    assert len(long) <= MAX_MESSAGE_CHARS + 1
    assert redact("a\x00b\x1bc") == "a b c"


@pytest.mark.parametrize("path", ["device", "device>edge", "device!>edge[edge>cloud]", "device~>edge?>cloud",
                                  "device>edge[edge!>cloud[a>b]]!", "a.b_c-d>e", "device(invalid_tool_call)>cloud",
                                  "device>up[edge(schema_mismatch)>cloud]"])
def test_paths_as_gateways_render_them_are_valid(path: str) -> None:
    assert valid_path(path)
    assert upstream_path({"x-recserve-path": path}, trusted=True) == path


@pytest.mark.parametrize("path", ["", ">", "device>", "evil<script>]", "a[b", "a]b", "a[b]]", "a b", "a>>b",
                                  "a!!", "-a", "a[" * 40 + "b" + "]" * 40, "a>" * 600 + "a", "a()>b", "a(x)!>b",
                                  "a(<script>)", "a(" + "x" * 40 + ")", "a(x"])
def test_anything_else_is_dropped(path: str) -> None:
    assert not valid_path(path) or len(path) > 1024
    assert upstream_path({"x-recserve-path": path}, trusted=True) is None


def test_untrusted_tiers_headers_are_ignored() -> None:
    headers = {"x-recserve-path": "edge>cloud", "x-recserve-uplink-tokens": "10"}
    assert upstream_path(headers, trusted=False) is None
    assert upstream_uplink_tokens(headers, trusted=False) == 0
    assert upstream_uplink_tokens(headers, trusted=True) == 10


@pytest.mark.parametrize("value", ["-5", "1e9", "9" * 400, "0x10", "", " 3", "\u0663"])
def test_uplink_tokens_must_be_a_sane_integer(value: str) -> None:
    assert upstream_uplink_tokens({"x-recserve-uplink-tokens": value}, trusted=True) == 0
