"""OpenAI request models, validated as strictly as OpenAI's API does: no coercion of "yes" into
True or "hot" into a number. Unknown fields are allowed and forwarded unchanged. Imports nothing
of ours."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from gateway.config.schema import WORKLOAD_NAME_PATTERN

Number = Annotated[float, Field(strict=True)]
NonEmptyStr = Annotated[str, Field(strict=True, min_length=1)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class RecServeExtension(BaseModel):
    """The request extension (`extra_body={"recserve": {...}}`); stripped before forwarding."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: Literal["classification", "generation"] | None = None
    labels: Annotated[list[NonEmptyStr], Field(min_length=1, max_length=256)] | None = None
    # The application a request belongs to ("humaneval", "sentiment-tagger"); bounded and restricted
    # to a key-safe alphabet because it becomes part of window keys and metric labels.
    workload: Annotated[StrictStr, Field(pattern=WORKLOAD_NAME_PATTERN)] | None = None


class StreamOptions(_Open):
    include_usage: StrictBool | None = None


class _SamplingRequest(_Open):
    model: NonEmptyStr
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    seed: StrictInt | None = None
    user: StrictStr | None = None
    recserve: RecServeExtension | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_SamplingRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    def answer_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingRequest):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    echo: StrictBool | None = None
    best_of: Annotated[StrictInt, Field(ge=1, le=20)] | None = None

    def answer_budget(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Open):
    model: NonEmptyStr
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


Route = Literal["chat/completions", "completions", "embeddings"]
