"""A request body checked against its API's model, once; a failure is the API's 400 naming the param."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.errors import from_error_detail, from_validation_error

Model = TypeVar("Model", bound=BaseModel)


def validate(schema: type[Model], raw: Mapping[str, Any], branch_tags: frozenset[str] = frozenset()) -> Model:
    """`raw` as `schema`, or OpenAI's 400 naming the offending param.

    With `branch_tags` (the tags of a schema's tagged unions), the error reported is the one from
    the deepest branch tried, named without the tags: `input[0].role`, not `input.str`.
    """
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        if not branch_tags:
            raise from_validation_error(exc) from None
        deepest = max(exc.errors(include_url=False), key=lambda error: len(error["loc"]))
        loc = deepest["loc"]
        # A tag is followed by the fields of its branch; a tag name that ends the path is a field.
        deepest["loc"] = tuple(p for i, p in enumerate(loc) if p not in branch_tags or i == len(loc) - 1)
        raise from_error_detail(deepest) from None
