"""MkDocs hook: the configuration page's reference table, generated from the config models."""

from __future__ import annotations

from typing import Any

from gateway.config import reference as config_reference


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if config_reference.MARKER not in markdown:
        return markdown
    return markdown.replace(config_reference.MARKER, config_reference.markdown())
