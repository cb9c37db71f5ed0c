"""The OpenAI Responses API request, validated as strictly as OpenAI does, and its translation into
the chat completion every tier is asked with (tiers speak chat: llama.cpp's own /v1/responses
returns no logprobs, and the cascade needs them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, StrictStr, Tag

from gateway.errors import InvalidRequest
from gateway.protocol import NonEmptyStr, Number, RecServeExtension

LOGPROBS_INCLUDE = "message.output_text.logprobs"
# The names pydantic puts in an error's path for the branches of the unions below.
BRANCH_TAGS = frozenset({"message", "function_call", "function_call_output",
                         "input_text", "output_text", "refusal", "input_image"})


class _Part(BaseModel):
    # Parts and items a client echoes back from an earlier output carry fields we do not use
    # (annotations, logprobs, ids, status): accepted and ignored, as OpenAI does.
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Part):
    type: Literal["input_text", "output_text"]
    text: StrictStr


class RefusalPart(_Part):
    type: Literal["refusal"]
    refusal: StrictStr


class ImagePart(_Part):
    type: Literal["input_image"]
    image_url: StrictStr
    detail: Literal["low", "high", "auto"] | None = None


ContentPart = Annotated[TextPart | RefusalPart | ImagePart, Field(discriminator="type")]


class MessageItem(_Part):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: StrictStr | list[ContentPart]


class FunctionCallItem(_Part):
    type: Literal["function_call"]
    call_id: NonEmptyStr
    name: NonEmptyStr
    arguments: StrictStr


class FunctionCallOutputItem(_Part):
    type: Literal["function_call_output"]
    call_id: NonEmptyStr
    output: StrictStr | list[TextPart]


def _item_kind(value: Any) -> str | None:
    # A message may omit `type` (the easy input form {"role", "content"}).
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


def _input_kind(value: Any) -> str | None:
    return "str" if isinstance(value, str) else "list[item]" if isinstance(value, list) else None


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_kind, custom_error_type="invalid_type",
                  custom_error_message="Input items are messages, function_call or function_call_output items"),
]


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    name: NonEmptyStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class FunctionChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    name: NonEmptyStr


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    name: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(BaseModel):
    """POST /v1/responses. Unknown fields are a 400, as OpenAI answers them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: NonEmptyStr
    input: Annotated[
        Annotated[StrictStr, Tag("str")] | Annotated[list[InputItem], Field(min_length=1), Tag("list[item]")],
        Discriminator(_input_kind, custom_error_type="invalid_type",
                      custom_error_message="Input should be a string or a list of input items")]
    instructions: StrictStr | None = None
    max_output_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextConfig | None = None
    include: list[StrictStr] | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(strict=True, max_length=512)]],
                        Field(max_length=16)] | None = None
    store: StrictBool | None = None
    previous_response_id: NonEmptyStr | None = None
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    background: Literal[False] | None = None  # background runs are not offered: a gateway answers now
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    service_tier: StrictStr | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None  # accepted for SDK defaults; tiers are not reasoning models
    recserve: RecServeExtension | None = None

    @property
    def wants_logprobs(self) -> bool:
        return LOGPROBS_INCLUDE in (self.include or ())


def input_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's `input` as chat messages (without `instructions`, which never carry over)."""
    if isinstance(request.input, str):
        return [{"role": "user", "content": request.input}]
    messages: list[dict[str, Any]] = []
    for item in request.input:
        if isinstance(item, MessageItem):
            # "developer" is the Responses name of the system role; llama.cpp tiers know only "system".
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": _content(item.content)})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls are one assistant turn in chat
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            output = item.output if isinstance(item.output, str) else "".join(p.text for p in item.output)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return messages


def _content(content: str | list[TextPart | RefusalPart | ImagePart]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if all(isinstance(part, TextPart) for part in content):
        # Plain text is the form every tier takes; chat text parts are not universal.
        return "".join(part.text for part in content if isinstance(part, TextPart))
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, RefusalPart):
            parts.append({"type": "text", "text": part.refusal})
        else:
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail is not None:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
    return parts


def chat_body(request: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completion request tiers receive for this Responses request (before the gateway's
    own additions: logprobs on, streaming options)."""
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "stream"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.tools:
        body["tools"] = [{"type": "function", "function": _function(tool)} for tool in request.tools]
    if isinstance(request.tool_choice, FunctionChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice.name}}
    elif request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    response_format = _response_format(request.text)
    if response_format is not None:
        body["response_format"] = response_format
    if request.wants_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs or 0
    if request.recserve is not None:
        body["recserve"] = request.recserve.model_dump(exclude_none=True)
    return body


def _function(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    if tool.strict is not None:
        function["strict"] = tool.strict
    return function


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if not fmt.name or fmt.schema_ is None:
        raise InvalidRequest("text.format of type json_schema needs a `name` and a `schema`.",
                             param="text.format", code="invalid_value")
    schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.description is not None:
        schema["description"] = fmt.description
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


def echo_text(text: TextConfig | None) -> dict[str, Any]:
    """The `text` field of the Response object: the format as the client set it, or plain text."""
    if text is None or text.format is None:
        return {"format": {"type": "text"}}
    return {"format": text.format.model_dump(by_alias=True, exclude_none=True)}


def echo_tools(request: ResponsesRequest) -> list[dict[str, Any]]:
    return [tool.model_dump(exclude_none=True) for tool in request.tools or ()]


def echo_tool_choice(request: ResponsesRequest) -> Any:
    choice = request.tool_choice
    if isinstance(choice, FunctionChoice):
        return choice.model_dump()
    return choice or "auto"

