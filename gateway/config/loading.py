"""Reading config.yaml: every problem becomes one `key.path: message` line of a ConfigError, never a
traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config.schema import GatewayConfig


class ConfigError(Exception):
    """A config that cannot be used; `errors` holds one 'key.path: message' line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


def parse_config(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of sections"])
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate config.yaml; every problem becomes a ConfigError line, never a traceback."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"(file): cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["(file): not UTF-8 text"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}: invalid YAML: {problem}"]) from None
    return parse_config(data, source)


def _format_errors(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    reported: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if not _is_union_branch(p)]
        # A union (beta: number or map) fails once per member; the first failure says enough.
        if ".".join(loc) in reported:
            continue
        reported.add(".".join(loc))
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
            # Cross-reference errors already carry their own key paths.
            if not loc:
                lines.extend(message.split("; "))
                continue
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{'.'.join(loc) or '(top level)'}: {message}")
    return lines


def _is_union_branch(part: Any) -> bool:
    # pydantic names the union member it tried ("float", "dict[str,...]"); not a key in the file.
    return isinstance(part, str) and ("[" in part or part in {"float", "int", "str", "constrained-float"})
