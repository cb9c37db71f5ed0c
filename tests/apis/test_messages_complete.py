"""The rest of Anthropic's Messages API, through a real gateway in uvicorn, scripted tiers and the
official Anthropic SDK: `messages.count_tokens` (counted by the top tier's llama-server tokenizer, or
estimated with tiktoken when the tier has none or misbehaves), `stop_reason: "stop_sequence"` with
the matched sequence (reported by a llama-server tier, or found by the gateway for sequences past the
four a tier takes), streamed and not, and every error under /v1/messages in Anthropic's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
import tiktoken

from gateway.upstream.tokenizer import COUNT_TIMEOUT_S
from tests.conftest import TEST_KEYS_ENV, GatewayStarter, RunningGateway, base_config, tier_entry
from tests.support.scripted_tier import ThreadedTier

from .test_messages import TOOLS, claude

ESTIMATE = "tiktoken:cl100k_base"
FOUR_TOKENS = "[*:tokens=0.9,0.9,0.9,0.9]"  # every tier answers "<tier> t1 t2 t3"
SIX_STOPS = ["never-a", "never-b", "never-c", "never-d", "never-e", " t2"]  # the one that matches is sixth


@pytest.fixture(scope="module")
def counting_cloud() -> Iterator[ThreadedTier]:
    """A top tier that serves llama-server's /apply-template and /tokenize."""
    with ThreadedTier("cloud", "cloud-model", tokenizer=True) as tier:
        yield tier


def config_with(tiers: dict[str, ThreadedTier], cloud: ThreadedTier | None = None, **extra: Any) -> dict[str, Any]:
    config = base_config(tiers)
    if cloud is not None:
        config["tiers"][2] = tier_entry(cloud)
    config["tiers"] = [{**entry, **extra} for entry in config["tiers"]]
    return config


def count(client: anthropic.Anthropic, **kwargs: Any) -> tuple[int, httpx.Headers]:
    kwargs.setdefault("model", "recserve")
    raw = client.messages.with_raw_response.count_tokens(**kwargs)
    return raw.parse().input_tokens, raw.headers


def tiktoken_estimate(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """The documented estimate: OpenAI's accounting for chat messages (3 tokens per message, 3 for the
    reply) over cl100k_base, plus the tool definitions as JSON."""
    encoding = tiktoken.get_encoding("cl100k_base")
    total = 3 + sum(3 + len(encoding.encode(m["content"])) for m in messages)
    if tools:
        total += len(encoding.encode(json.dumps(tools, ensure_ascii=False)))
    return total


def test_count_tokens_by_the_top_tiers_tokenizer(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                                 counting_cloud: ThreadedTier) -> None:
    gateway = start_gateway(config=config_with(tiers, counting_cloud))
    counting_cloud.clear()
    with claude(gateway) as client:
        tokens, headers = count(client, system="Be brief.", tools=TOOLS,
                                messages=[{"role": "user", "content": "What is the weather in Oslo?"}])
    assert headers["x-recserve-tokenizer"] == "tier:cloud"
    rendered, tokenized = counting_cloud.requests
    assert (rendered.path, tokenized.path) == ("/apply-template", "/tokenize")
    # The tier rendered the chat body the gateway would send it, and its tokenizer counted that text.
    assert rendered.json["messages"] == [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "What is the weather in Oslo?"}]
    assert rendered.json["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": TOOLS[0]["input_schema"], "description": "Weather"}}]
    assert tokenized.json["add_special"] is True and tokenized.json["parse_special"] is True
    assert tokens == len(tokenized.json["content"].split()) > 0
    assert not tiers["device"].requests and not tiers["edge"].requests  # no tier generated anything


def test_count_tokens_estimates_with_tiktoken_where_no_tier_counts(gateway: RunningGateway,
                                                                   tiers: dict[str, ThreadedTier]) -> None:
    messages = [{"role": "user", "content": "What is the weather in Oslo?"},
                {"role": "assistant", "content": "Let me look."},
                {"role": "user", "content": "Thanks."}]
    with claude(gateway) as client:
        tokens, headers = count(client, system="Be brief.", messages=messages)
        again, _ = count(client, system="Be brief.", messages=messages)
        with_tools, _ = count(client, system="Be brief.", messages=messages, tools=TOOLS)
    assert headers["x-recserve-tokenizer"] == ESTIMATE
    assert tokens == again == tiktoken_estimate([{"content": "Be brief."}, *messages])
    chat_tools = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOLS[0]["input_schema"],
                                                    "description": "Weather"}}]
    assert with_tools == tiktoken_estimate([{"content": "Be brief."}, *messages], chat_tools)
    # The cloud tier was asked once (404: no such route), then left alone.
    assert [r.path for r in tiers["cloud"].requests] == ["/apply-template"]


@pytest.mark.parametrize("directive", ["status=500", "status=404", "garbage", "reset", f"sleep={COUNT_TIMEOUT_S + 3}"])
def test_a_misbehaving_tokenizer_falls_back_to_the_estimate(start_gateway: GatewayStarter,
                                                            tiers: dict[str, ThreadedTier],
                                                            counting_cloud: ThreadedTier, directive: str) -> None:
    gateway = start_gateway(config=config_with(tiers, counting_cloud))
    counting_cloud.clear()
    prompt = f"count me [cloud:{directive}]"
    with claude(gateway) as client:
        started = time.monotonic()
        tokens, headers = count(client, messages=[{"role": "user", "content": prompt}])
        elapsed = time.monotonic() - started
        assert [r.path for r in counting_cloud.requests] == ["/apply-template"]
        _, next_headers = count(client, messages=[{"role": "user", "content": "and me"}])
    assert headers["x-recserve-tokenizer"] == ESTIMATE
    assert tokens == tiktoken_estimate([{"content": prompt}])
    assert elapsed < COUNT_TIMEOUT_S + 2.0  # bounded by the count's own timeout, not the tier's
    # A tier without the routes, unusable or out of reach is left alone for a while; one that failed
    # on this body (its 500) is asked again for the next.
    rests = directive != "status=500"
    assert next_headers["x-recserve-tokenizer"] == (ESTIMATE if rests else "tier:cloud")


def test_count_tokens_of_a_pinned_tier_and_its_errors(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                                      counting_cloud: ThreadedTier,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_KEYS_ENV, "k1")
    gateway = start_gateway(config=config_with(tiers, counting_cloud))
    messages = [{"role": "user", "content": "hello there"}]
    with claude(gateway, api_key="k1") as client:
        assert count(client, model="recserve/edge", messages=messages)[1]["x-recserve-tokenizer"] == ESTIMATE
        assert count(client, model="recserve/cloud", messages=messages)[1]["x-recserve-tokenizer"] == "tier:cloud"
        with pytest.raises(anthropic.NotFoundError) as unknown:
            count(client, model="claude-sonnet-4-5", messages=messages)
        assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            count(client, messages=messages, extra_body={"max_tokens": 5})
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with claude(gateway, api_key="wrong") as stranger, pytest.raises(anthropic.AuthenticationError) as refused:
        count(stranger, messages=messages)
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


@pytest.fixture
def llama_tiers(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> Iterator[anthropic.Anthropic]:
    with claude(start_gateway(config=config_with(tiers, llama_server=True))) as client:
        yield client


@pytest.fixture
def plain_tiers(gateway: RunningGateway) -> Iterator[anthropic.Anthropic]:
    with claude(gateway) as client:
        yield client


def test_stop_sequence_reported_by_a_llama_server_tier(llama_tiers: anthropic.Anthropic,
                                                       tiers: dict[str, ThreadedTier]) -> None:
    message = llama_tiers.messages.create(model="recserve/device", max_tokens=16, stop_sequences=[" t2", "x"],
                                          messages=[{"role": "user", "content": FOUR_TOKENS}])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == " t2"
    assert message.content[0].text == "device t1"  # type: ignore[union-attr]
    sent = tiers["device"].requests[-1].json
    assert sent["stop"] == [" t2", "x"] and sent["verbose"] is True
    assert "__verbose" not in json.dumps(message.model_dump())
    ended = llama_tiers.messages.create(model="recserve/device", max_tokens=16, stop_sequences=["never"],
                                        messages=[{"role": "user", "content": FOUR_TOKENS}])
    assert ended.stop_reason == "end_turn" and ended.stop_sequence is None


def test_a_tier_that_says_only_stop_is_end_turn(plain_tiers: anthropic.Anthropic,
                                                tiers: dict[str, ThreadedTier]) -> None:
    message = plain_tiers.messages.create(model="recserve/device", max_tokens=16, stop_sequences=[" t2"],
                                          messages=[{"role": "user", "content": FOUR_TOKENS}])
    assert message.content[0].text == "device t1"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None  # the rule's third case
    assert "verbose" not in tiers["device"].requests[-1].json


@pytest.mark.parametrize("llama_server", [False, True])
def test_more_than_four_stop_sequences(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                       llama_server: bool) -> None:
    with claude(start_gateway(config=config_with(tiers, llama_server=llama_server))) as client:
        message = client.messages.create(model="recserve/device", max_tokens=16, stop_sequences=SIX_STOPS,
                                         messages=[{"role": "user", "content": FOUR_TOKENS}])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == " t2"
    assert message.content[0].text == "device t1"  # type: ignore[union-attr]
    # A llama-server tier takes them all and stops itself; any other gets OpenAI's four, the gateway the rest.
    assert tiers["device"].requests[-1].json["stop"] == (SIX_STOPS if llama_server else SIX_STOPS[:4])


@pytest.mark.parametrize("mode", ["buffered", "early"])
@pytest.mark.parametrize("llama_server", [False, True])
def test_streamed_stop_sequence(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], mode: str,
                                llama_server: bool) -> None:
    gateway = start_gateway(config={**config_with(tiers, llama_server=llama_server),
                                    "streaming": {"mode": mode, "decide_after_tokens": 2}})
    with claude(gateway) as client:
        # Reported by the tier when it is llama-server, else found by the gateway (sixth: the tier never had it).
        stops = [" t2"] if llama_server else SIX_STOPS
        events = list(client.messages.create(model="recserve/device", max_tokens=16, stream=True,
                                             stop_sequences=stops,
                                             messages=[{"role": "user", "content": FOUR_TOKENS}]))
        with client.messages.stream(model="recserve/device", max_tokens=16, stop_sequences=stops,
                                    messages=[{"role": "user", "content": FOUR_TOKENS}]) as stream:
            final = stream.get_final_message()
    texts = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert "".join(texts) == "device t1"
    closing = next(e for e in events if e.type == "message_delta")
    assert closing.delta.stop_reason == "stop_sequence" and closing.delta.stop_sequence == " t2"
    assert [e.type for e in events][-2:] == ["message_delta", "message_stop"]
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == " t2"
    assert final.content[0].text == "device t1"  # type: ignore[union-attr]


def test_a_stream_is_cut_by_a_sequence_the_tier_never_had(plain_tiers: anthropic.Anthropic,
                                                          tiers: dict[str, ThreadedTier]) -> None:
    """Text is passed on only once no sequence can begin in it: not one character of the sequence leaves."""
    stops = [*SIX_STOPS[:5], " t1 t"]
    with plain_tiers.messages.stream(model="recserve/device", max_tokens=16, stop_sequences=stops,
                                     messages=[{"role": "user", "content": FOUR_TOKENS}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "device" and final.stop_sequence == " t1 t"
    assert tiers["device"].requests[-1].json["stop"] == stops[:4]


@pytest.mark.parametrize("stops", [[f"s{k}" for k in range(65)], [""], ["x" * 1001]],
                         ids=["65 sequences", "an empty one", "over 1000 characters"])
def test_stop_sequences_past_the_bounds_are_a_400(plain_tiers: anthropic.Anthropic, stops: list[str]) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        plain_tiers.messages.create(model="recserve", max_tokens=4, stop_sequences=stops,
                                    messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "stop_sequences" in refused.value.body["error"]["message"]  # type: ignore[index]


def test_unknown_messages_routes_are_anthropic_404s(plain_tiers: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as listed:
        plain_tiers.messages.batches.list()
    assert listed.value.body["type"] == "error"  # type: ignore[index]
    assert listed.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as created:
        plain_tiers.messages.batches.create(requests=[{"custom_id": "a", "params": {
            "model": "recserve", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}}])
    assert created.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


@pytest.mark.parametrize(("method", "path", "allowed", "shape"), [
    ("GET", "/v1/messages", "POST", "anthropic"),
    ("DELETE", "/v1/messages/count_tokens", "POST", "anthropic"),
    ("GET", "/v1/messages/batches/msgbatch_1", None, "anthropic"),
    ("GET", "/v1/chat/completions", "POST", "openai"),
    ("POST", "/v1/messagesx", None, "openai"),
    ("GET", "/v1/nothing", None, "openai"),
])
def test_wrong_method_or_path_answers_in_the_routes_shape(gateway: RunningGateway, method: str, path: str,
                                                          allowed: str | None, shape: str) -> None:
    answer = httpx.request(method, gateway.root + path, json={} if method != "GET" else None)
    assert answer.status_code == (405 if allowed else 404), answer.text
    body = answer.json()
    if shape == "anthropic":
        assert body["type"] == "error" and body["error"]["message"]
        assert body["error"]["type"] == ("invalid_request_error" if allowed else "not_found_error")
    else:
        assert set(body) == {"error"} and body["error"]["code"] == ("method_not_allowed" if allowed else "not_found")
    if allowed:
        assert answer.headers["allow"] == allowed


def test_count_tokens_counts_against_the_keys_rate_limit(start_gateway: GatewayStarter,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_KEYS_ENV, "k1")
    gateway = start_gateway({"auth": {"rate_limit": {"requests_per_minute": 1, "burst": 2}}})
    messages = [{"role": "user", "content": "hello"}]
    with claude(gateway, api_key="k1") as client:
        client.messages.create(model="recserve", max_tokens=4, messages=messages)
        count(client, messages=messages)
        with pytest.raises(anthropic.RateLimitError) as limited:
            count(client, messages=messages)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) > 0


@pytest.mark.parametrize("stream", [False, True])
def test_llama_servers_report_never_reaches_a_chat_client(start_gateway: GatewayStarter,
                                                          tiers: dict[str, ThreadedTier], stream: bool) -> None:
    """llama-server's `__verbose` repeats the prompt: the gateway keeps only the stop sequence from it."""
    gateway = start_gateway(config=config_with(tiers, llama_server=True))
    body = {"model": "recserve/device", "stop": [" t2"], "stream": stream,
            "messages": [{"role": "user", "content": FOUR_TOKENS}]}
    answer = httpx.post(gateway.url + "/chat/completions", json=body, timeout=30)
    assert tiers["device"].requests[-1].json["verbose"] is True
    assert answer.status_code == 200 and "__verbose" not in answer.text and "(the prompt)" not in answer.text
    if stream:
        finished = [json.loads(line[6:])["choices"][0] for line in answer.text.splitlines()
                    if line.startswith("data: {") and '"finish_reason":"stop"' in line.replace(" ", "")]
    else:
        finished = answer.json()["choices"]
    assert [(c["finish_reason"], c["stop_reason"]) for c in finished] == [("stop", " t2")]
