"""The contracts every room shares: the OpenAI request models (validated as strictly as OpenAI's
API does: no coercion of "yes" into True or "hot" into a number; unknown fields allowed and forwarded
unchanged), what the cascade reads of any API's request (`CascadeAsk`), what the door hands on
(`Admission`) and the headers chained gateways speak. Imports nothing of ours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

# Workload names become part of window keys and metric labels: bounded, key-safe alphabet.
WORKLOAD_NAME_PATTERN = r"^[A-Za-z0-9._:,/-]{1,64}$"
HOPS_HEADER = "x-recserve-hops"
VIA_HEADER = "x-recserve-via"  # comma-separated instance ids of the gateways a request passed
TASK_HEADER = "x-recserve-task"
WORKLOAD_HEADER = "x-recserve-workload"

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


@dataclass(frozen=True, slots=True)
class CascadeAsk:
    """What the cascade reads of a validated request, whichever API it came by. Each API builds it from
    its own request model, so a request is validated once, as itself, and never again as a chat
    completion; the cascade never calls back into an API."""

    model: str
    stream: bool
    recserve: RecServeExtension | None
    answer_budget: int | None  # the most tokens the answer may take, if the client set it

    @classmethod
    def of(cls, request: ChatCompletionRequest | CompletionRequest) -> CascadeAsk:
        return cls(request.model, request.stream is True, request.recserve, request.answer_budget())


@dataclass(frozen=True, slots=True)
class Admission:
    """A request that passed the door (gateway/server/intake.py), as the API and the cascade see it."""

    request_id: str
    started: float  # time.monotonic(); the cascade's deadline counts from here
    hops: int  # chained gateways this request already passed
    via: list[str]  # their instance ids, and ours last
    client_key: str | None  # the key it presented (its default workload); None on an open gateway
    body: dict[str, Any]  # the JSON body, parsed once; {} for routes without one
    # The tenant the key belongs to (gateway/config/tenants.py): what the client stores or teaches is
    # kept under it. A name, never the key; `open` on an open gateway.
    tenant: str
