"""The Anthropic Messages API request, validated strictly, and its translation into the chat
completion every tier is asked with. Anthropic tools become function tools, `tool_use` and
`tool_result` blocks become chat tool calls and tool messages. `POST /v1/messages/count_tokens`
takes the prompt side of the same request (`Prompt`), translated the same way."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from gateway.protocol import NonEmptyStr, Number, RecServeExtension

# Anthropic documents no cap on `stop_sequences`. These bounds keep what the gateway scans every
# streamed piece of an answer for (gateway/apis/messages/stops.py) small; tiers get what they take.
MAX_STOP_SEQUENCES = 64
MAX_STOP_SEQUENCE_CHARS = 1000
StopSequence = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_STOP_SEQUENCE_CHARS)]


class _Block(BaseModel):
    # Blocks a client echoes back from an earlier answer may carry fields we do not use (citations,
    # cache_control): ignored, as Anthropic does with cache hints it does not need.
    model_config = ConfigDict(extra="ignore", strict=True)


class TextBlock(_Block):
    type: Literal["text"]
    text: StrictStr


class ImageSource(_Block):
    type: Literal["base64", "url"]
    media_type: StrictStr | None = None
    data: StrictStr | None = None
    url: StrictStr | None = None


class ImageBlock(_Block):
    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: NonEmptyStr
    name: NonEmptyStr
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: NonEmptyStr
    content: StrictStr | list[TextBlock] | None = None
    is_error: StrictBool | None = None


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: StrictStr | list[Block]


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # cache_control and the like

    name: NonEmptyStr
    description: StrictStr | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["auto", "any", "tool", "none"]
    name: NonEmptyStr | None = None
    disable_parallel_tool_use: StrictBool | None = None  # at most one call: chat's parallel_tool_calls false

    @model_validator(mode="after")
    def _named_tool(self) -> ToolChoice:
        if self.type == "tool" and self.name is None:
            raise ValueError("a tool_choice of type 'tool' needs the tool's name")
        return self


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    """Structured outputs: the answer is JSON that fits `format.schema` (chat's response_format)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: OutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None  # accepted; tiers do not reason


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: StrictStr | None = None


class Prompt(BaseModel):
    """What a Messages request asks the model about: the part `count_tokens` counts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: NonEmptyStr
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: StrictStr | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None


class CountTokensRequest(Prompt):
    """POST /v1/messages/count_tokens. Unknown fields are a 400."""


class MessagesRequest(Prompt):
    """POST /v1/messages. Unknown fields are a 400."""

    max_tokens: Annotated[StrictInt, Field(ge=1)]
    temperature: Annotated[Number, Field(ge=0, le=1)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None
    stop_sequences: Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: StrictBool | None = None
    metadata: Metadata | None = None
    recserve: RecServeExtension | None = None


def prompt_body(prompt: Prompt) -> dict[str, Any]:
    """The prompt side of the chat completion tiers receive: model, messages, tools, answer format."""
    messages: list[dict[str, Any]] = []
    if prompt.system:
        system = prompt.system if isinstance(prompt.system, str) else "".join(b.text for b in prompt.system)
        messages.append({"role": "system", "content": system})
    for message in prompt.messages:
        messages += _chat_messages(message)
    body: dict[str, Any] = {"model": prompt.model, "messages": messages}
    if prompt.tools:
        body["tools"] = [{"type": "function", "function": _function(tool)} for tool in prompt.tools]
    if prompt.tool_choice is not None:
        body["tool_choice"] = _tool_choice(prompt.tool_choice)
        if prompt.tool_choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    output_format = prompt.output_config.format if prompt.output_config is not None else None
    if output_format is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": output_format.schema_}}
    return body


def chat_body(request: MessagesRequest) -> dict[str, Any]:
    """The chat completion request tiers receive for this Messages request. Every stop sequence goes
    in `stop`; a tier that takes fewer gets the first ones (gateway/upstream/backends.py)."""
    body = prompt_body(request)
    body["max_tokens"] = request.max_tokens
    for name in ("temperature", "top_p", "stream"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.metadata is not None and request.metadata.user_id is not None:
        body["user"] = request.metadata.user_id
    if request.recserve is not None:
        body["recserve"] = request.recserve.model_dump(exclude_none=True)
    return body


def _chat_messages(message: InputMessage) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages: tool results become tool messages of their own,
    ahead of the turn's other content (chat requires them right after the assistant's calls)."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.source)}})
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input)}})
        else:
            result = block.content if isinstance(block.content, str) else "".join(
                b.text for b in block.content or ())
            tool_messages.append({"role": "tool", "tool_call_id": block.tool_use_id,
                                  "content": f"Error: {result}" if block.is_error else result})
    out = list(tool_messages)
    if parts or calls:
        text_only = all(p["type"] == "text" for p in parts)
        content: Any = "".join(p["text"] for p in parts) if text_only else parts
        turn: dict[str, Any] = {"role": message.role, "content": content if (content or not calls) else None}
        if calls:
            turn["tool_calls"] = calls
        out.append(turn)
    return out


def _image_url(source: ImageSource) -> str:
    if source.type == "url":
        return source.url or ""
    return f"data:{source.media_type or 'image/png'};base64,{source.data or ''}"


def _function(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    return function


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name or ""}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]
