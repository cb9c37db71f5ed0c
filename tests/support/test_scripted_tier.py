"""The scripted tier itself: every directive, both logprob layouts, HTTP framing and faults,
and that the official openai SDK parses what it sends."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.scripted_tier import ScriptedTier, ThreadedTier
from tests.support.servers import UvicornThread, free_port, wait_http_ok

LN_09 = math.log(0.9)


@pytest.fixture
def tier() -> Iterator[ThreadedTier]:
    with ThreadedTier("device", "smollm2-135m") as running:
        yield running
        assert running.errors == []  # the tier never crashed while serving


@pytest.fixture
def client(tier: ThreadedTier) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tier.base_url, timeout=5.0) as http:
        yield http


def chat(client: httpx.Client, text: str, *, timeout: float = 5.0, **fields: Any) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], **fields}
    return client.post("/chat/completions", json=body, timeout=timeout)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def tokens_of(response: httpx.Response, choice: int = 0) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = response.json()["choices"][choice]["logprobs"]["content"]
    return content


def test_default_answer_is_two_tokens_at_p_09(client: httpx.Client) -> None:
    response = chat(client, "what is two plus two", logprobs=True, top_logprobs=5)
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "chat.completion"
    assert body["model"] == "smollm2-135m"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "device answer", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    entries = tokens_of(response)
    assert [e["token"] for e in entries] == ["device", " answer"]
    assert [e["logprob"] for e in entries] == [LN_09, LN_09]
    for entry in entries:
        top = entry["top_logprobs"]
        assert top[0]["token"] == entry["token"] and top[0]["logprob"] == LN_09
        assert 2 <= len(top) <= 3
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert sum(math.exp(t["logprob"]) for t in top) <= 1.0
        assert entry["bytes"] == list(entry["token"].encode())


def test_top_logprobs_count_is_honoured(client: httpx.Client) -> None:
    assert len(tokens_of(chat(client, "x", logprobs=True, top_logprobs=1))[0]["top_logprobs"]) == 1
    assert tokens_of(chat(client, "x", logprobs=True))[0]["top_logprobs"] == []


def test_no_logprobs_unless_asked(client: httpx.Client) -> None:
    assert chat(client, "hello").json()["choices"][0]["logprobs"] is None


def test_single_probability_directive(client: httpx.Client) -> None:
    response = chat(client, "hi [device:0.42]", logprobs=True, top_logprobs=3)
    [entry] = tokens_of(response)
    assert entry["token"] == "device says"
    assert entry["logprob"] == math.log(0.42)
    assert math.exp(entry["logprob"]) == pytest.approx(0.42)
    assert response.json()["choices"][0]["message"]["content"] == "device says"


def test_zero_probability_is_a_finite_logprob(client: httpx.Client) -> None:
    [entry] = tokens_of(chat(client, "[device:0]", logprobs=True, top_logprobs=3))
    assert entry["logprob"] == -9999.0


def test_tokens_directive(client: httpx.Client) -> None:
    response = chat(client, "[device:tokens=0.5,0.8,0.9]", logprobs=True)
    assert [e["logprob"] for e in tokens_of(response)] == [math.log(0.5), math.log(0.8), math.log(0.9)]
    assert response.json()["usage"]["completion_tokens"] == 3


def test_label_directive_keeps_token_text_verbatim(client: httpx.Client) -> None:
    response = chat(
        client, "[device:label= Positive:0.6,negative:0.3,neutral:0.1]", logprobs=True, top_logprobs=5
    )
    [entry] = tokens_of(response)
    assert entry["token"] == " Positive" and entry["logprob"] == math.log(0.6)
    assert [(t["token"], t["logprob"]) for t in entry["top_logprobs"]] == [
        (" Positive", math.log(0.6)),
        ("negative", math.log(0.3)),
        ("neutral", math.log(0.1)),
    ]


def test_answer_directive(client: httpx.Client) -> None:
    response = chat(client, "[device:answer=Paris is the capital]", logprobs=True)
    assert response.json()["choices"][0]["message"]["content"] == "Paris is the capital"
    assert [e["logprob"] for e in tokens_of(response)] == [LN_09]


def test_only_own_and_wildcard_directives_are_obeyed(client: httpx.Client) -> None:
    assert chat(client, "[edge:status=500][cloud:reset]").status_code == 200
    assert chat(client, "[*:status=503]").status_code == 503


def test_several_directives_combine(client: httpx.Client, tier: ThreadedTier) -> None:
    response = chat(client, "[device:0.3] and [device:sleep=0.05][device:header=x-foo:bar]", logprobs=True)
    assert [e["logprob"] for e in tokens_of(response)] == [math.log(0.3)]
    assert response.headers["x-foo"] == "bar"


def test_header_values_may_be_percent_encoded(client: httpx.Client) -> None:
    response = chat(client, "[device:header=x-recserve-path:edge%5Bdevice>cloud%5D]")
    assert response.headers["x-recserve-path"] == "edge[device>cloud]"


@pytest.mark.parametrize("status", [400, 429, 500, 508])
def test_status_directive_answers_an_openai_error(client: httpx.Client, status: int) -> None:
    response = chat(client, f"[device:status={status}]")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] == f"scripted {status}"
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is None and error["code"] is None and isinstance(error["type"], str)


def test_unknown_directive_fails_loudly(client: httpx.Client) -> None:
    response = chat(client, "[device:sleeep=1]")
    assert response.status_code == 400
    assert "sleeep" in response.json()["error"]["message"]


def test_requests_are_recorded_before_faults(client: httpx.Client, tier: ThreadedTier) -> None:
    chat(client, "[device:status=500]", logprobs=True, recserve={"task": "generation"})
    [recorded] = tier.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.json["recserve"] == {"task": "generation"} and recorded.json["logprobs"] is True
    assert recorded.headers["content-type"] == "application/json"
    assert json.loads(recorded.body) == recorded.json
    tier.clear()
    assert tier.requests == []


def test_sleep_times_out_the_client_and_the_tier_recovers(tier: ThreadedTier, client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        chat(client, "[device:sleep=5]", timeout=0.2)
    assert len(tier.requests) == 1  # recorded before sleeping
    assert chat(client, "again").status_code == 200


def test_sleep_ends_when_the_client_leaves(tier: ThreadedTier) -> None:
    body = json.dumps({"model": "m", "prompt": "[device:sleep=60]"}).encode()
    head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", tier.port), timeout=5) as sock:
        sock.sendall(head + body)
        wait_until(lambda: len(tier.requests) == 1)
    wait_until(lambda: tier.active_connections == 0)  # not still sleeping for a client that left


def test_reset_aborts_the_connection(tier: ThreadedTier, client: httpx.Client) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(client, "[device:reset]")
    assert len(tier.requests) == 1
    assert chat(client, "fine now").status_code == 200


def test_garbage_body(client: httpx.Client) -> None:
    response = chat(client, "[device:garbage]")
    assert response.status_code == 200 and response.text == "not json{"


def test_nologprobs(client: httpx.Client) -> None:
    assert chat(client, "[device:nologprobs]", logprobs=True).json()["choices"][0]["logprobs"] is None


def test_nan_is_a_bare_token_on_the_wire(client: httpx.Client) -> None:
    response = chat(client, "[device:nan]", logprobs=True)
    assert '"logprob":NaN' in response.text
    assert all(math.isnan(e["logprob"]) for e in tokens_of(response))


def test_empty_answer(client: httpx.Client) -> None:
    response = chat(client, "[device:empty]", logprobs=True)
    assert response.json()["choices"][0]["message"]["content"] == ""
    assert tokens_of(response) == []
    assert response.json()["usage"]["completion_tokens"] == 0


def test_tool_call(client: httpx.Client) -> None:
    choice = chat(client, "weather? [device:tool]", logprobs=True).json()["choices"][0]
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"] == {"name": "get_weather", "arguments": "{}"}
    assert choice["finish_reason"] == "tool_calls"
    assert [e["logprob"] for e in choice["logprobs"]["content"]] == [LN_09]


def test_n_choices_and_choices_directive(client: httpx.Client) -> None:
    assert len(chat(client, "x", n=3).json()["choices"]) == 3
    response = chat(client, "[device:choices=0.9,0.2]", logprobs=True)
    assert [tokens_of(response, i)[0]["logprob"] for i in range(2)] == [math.log(0.9), math.log(0.2)]


def test_completions_legacy_layout(client: httpx.Client) -> None:
    body = client.post(
        "/completions", json={"model": "m", "prompt": "say [device:0.25]", "logprobs": 2}
    ).json()
    assert body["object"] == "text_completion" and body["model"] == "smollm2-135m"
    choice = body["choices"][0]
    assert choice["text"] == "device says"
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["device says"]
    assert logprobs["token_logprobs"] == [math.log(0.25)]
    assert (
        logprobs["top_logprobs"][0]["device says"] == math.log(0.25) and len(logprobs["top_logprobs"][0]) == 2
    )
    assert logprobs["text_offset"] == [len("say [device:0.25]")]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}


def test_completions_llamacpp_layout(client: httpx.Client) -> None:
    prompt = "[device:llamacpp][device:label=positive:0.7,negative:0.3]"
    body = client.post("/completions", json={"model": "m", "prompt": prompt, "logprobs": 5}).json()
    [entry] = body["choices"][0]["logprobs"]["content"]
    assert entry["token"] == "positive" and entry["logprob"] == math.log(0.7)
    assert [t["token"] for t in entry["top_logprobs"]] == ["positive", "negative"]


def test_completions_without_logprobs(client: httpx.Client) -> None:
    body = client.post("/completions", json={"model": "m", "prompt": "hi"}).json()
    assert body["choices"][0]["logprobs"] is None and body["choices"][0]["text"] == "device answer"


def test_embeddings_are_deterministic(client: httpx.Client) -> None:
    def embed(value: str | list[str]) -> list[list[float]]:
        data = client.post("/embeddings", json={"model": "m", "input": value}).json()["data"]
        return [item["embedding"] for item in data]

    first, second, other = embed(["a cat", "a cat", "a dog"])
    assert first == second != other and len(first) == 8
    assert sum(v * v for v in first) == pytest.approx(1.0)
    assert embed("a cat") == [first]


def test_models_health_and_unknown_routes(client: httpx.Client) -> None:
    assert client.get("/models").json()["data"][0]["id"] == "smollm2-135m"
    assert client.get("/../health").json() == {"status": "ok"}  # httpx normalises to /health
    assert client.get("/nope").status_code == 404
    assert client.get("/chat/completions").status_code == 405
    assert client.post("/chat/completions", content=b"{nope").status_code == 400


def test_keep_alive_reuses_one_connection(tier: ThreadedTier, client: httpx.Client) -> None:
    assert chat(client, "one").status_code == 200
    assert chat(client, "two").status_code == 200
    first, second = tier.requests
    assert first.peer == second.peer


def test_connection_close_is_honoured(tier: ThreadedTier, client: httpx.Client) -> None:
    closing = client.post(
        "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "one"}]},
        headers={"connection": "close"},
    )
    assert closing.headers["connection"] == "close"
    assert chat(client, "two").status_code == 200
    first, second = tier.requests
    assert first.peer != second.peer


def test_chunked_request_body(tier: ThreadedTier, client: httpx.Client) -> None:
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "[device:0.5]"}]}).encode()

    def pieces() -> Iterator[bytes]:  # an iterator body makes httpx send Transfer-Encoding: chunked
        yield payload[:10]
        yield payload[10:]

    response = client.post(
        "/chat/completions", content=pieces(), headers={"content-type": "application/json"}
    )
    assert response.json()["choices"][0]["message"]["content"] == "device says"
    assert tier.requests[0].headers["transfer-encoding"] == "chunked"
    assert tier.requests[0].json["model"] == "m"


def test_malformed_request_line_gets_400(tier: ThreadedTier) -> None:
    with socket.create_connection(("127.0.0.1", tier.port), timeout=5) as sock:
        sock.sendall(b"NOT-HTTP\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 ")


def sse_events(response: httpx.Response) -> list[Any]:
    """Data payloads of an event stream, `[DONE]` kept as a string."""
    events: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_chat_stream(client: httpx.Client) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "[device:tokens=0.5,0.6]"}],
        "stream": True,
        "logprobs": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    token_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["logprobs"]["content"][0]["logprob"] for c in token_chunks] == [
        math.log(0.5),
        math.log(0.6),
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


def test_completions_stream_legacy_logprobs(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": "[device:0.4]", "stream": True, "logprobs": 1}
    with client.stream("POST", "/completions", json=body) as response:
        events = sse_events(response)
    assert events[0]["choices"][0]["logprobs"]["token_logprobs"] == [math.log(0.4)]
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"


def test_stream_stall_and_cut(client: httpx.Client) -> None:
    def first_then_error(text: str, timeout: float) -> list[str]:
        body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": True}
        seen: list[str] = []
        with client.stream("POST", "/chat/completions", json=body, timeout=timeout) as response:
            for line in response.iter_lines():
                seen.append(line)
        return seen

    with pytest.raises(httpx.ReadTimeout):
        first_then_error("[device:stall=5]", 0.3)
    with pytest.raises(httpx.RemoteProtocolError):
        first_then_error("[device:cut]", 5)


def test_openai_sdk_parses_chat_completions_and_embeddings(tier: ThreadedTier) -> None:
    with openai.OpenAI(base_url=tier.base_url, api_key="x", max_retries=0) as sdk:
        completion = sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "[device:label=yes:0.8,no:0.2]"}],
            logprobs=True,
            top_logprobs=2,
            extra_body={"recserve": {"task": "classification"}},
        )
        assert completion.choices[0].logprobs is not None and completion.choices[0].logprobs.content
        entry = completion.choices[0].logprobs.content[0]
        assert entry.token == "yes" and entry.logprob == math.log(0.8)
        assert [t.token for t in entry.top_logprobs] == ["yes", "no"]
        assert completion.usage is not None and completion.usage.completion_tokens == 1

        legacy = sdk.completions.create(model="m", prompt="[device:0.7]", logprobs=2)
        assert legacy.choices[0].logprobs is not None
        assert legacy.choices[0].logprobs.token_logprobs == [math.log(0.7)]

        tool = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "[device:tool]"}])
        assert tool.choices[0].message.tool_calls is not None

        stream = sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "device answer"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2

        vector = sdk.embeddings.create(model="m", input="a cat").data[0].embedding  # base64 on the wire
        assert len(vector) == 8 and sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-6)

        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "[device:status=500]"}]
            )


async def test_scripted_tier_on_the_running_loop() -> None:
    async with ScriptedTier("edge") as tier, httpx.AsyncClient(base_url=tier.base_url) as client:
        response = await client.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "[edge:0.8]"}], "logprobs": True},
        )
        assert response.json()["choices"][0]["logprobs"]["content"][0]["logprob"] == math.log(0.8)
        with pytest.raises(httpx.ReadTimeout):  # the tier notices the client leaving and stops sleeping
            await client.post("/completions", json={"model": "m", "prompt": "[edge:sleep=10]"}, timeout=0.1)
    assert tier.errors == [] and len(tier.requests) == 2


def test_uvicorn_thread_serves_an_asgi_app() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    with UvicornThread(app) as server:
        assert wait_http_ok(f"{server.base_url}/anything", timeout=5).text == "ok"
    assert isinstance(free_port(), int)


def test_scripted_calls_whole_and_streamed(client: httpx.Client) -> None:
    prompt = '[device:0.5][device:call=get_weather:{"city": %5B"Oslo"%5D}][device:call=get_time:]'
    choice = chat(client, prompt, logprobs=True).json()["choices"][0]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "tool_calls"
    assert [(c["id"], c["function"]) for c in choice["message"]["tool_calls"]] == [
        ("call_device_0_0", {"name": "get_weather", "arguments": '{"city": ["Oslo"]}'}),
        ("call_device_0_1", {"name": "get_time", "arguments": ""})]
    logprobs = [e["logprob"] for e in choice["logprobs"]["content"]]
    assert len(logprobs) == 1 + 5 + 1 and set(logprobs) == {math.log(0.5)}  # name, 4-character pieces, name
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True, "logprobs": True}
    with client.stream("POST", "/chat/completions", json=body) as response:
        chunks = [e for e in sse_events(response) if e != "[DONE]"]
    fragments = [f for c in chunks for f in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert fragments[0] == {"index": 0, "id": "call_device_0_0", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}
    joined = "".join(f["function"]["arguments"] for f in fragments if f["index"] == 0)
    assert joined == '{"city": ["Oslo"]}' and len([f for f in fragments if f["index"] == 0]) == 6
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
