"""The configuration reference (docs/configuration.md) is generated from the config models: every
key must have a description, and no description may name a key that is gone."""

from __future__ import annotations

from pathlib import Path

from gateway.config import reference as config_reference

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_config_key_is_documented() -> None:
    missing = config_reference.undocumented()
    assert not missing, ("config keys without a description (add Field(description=...) in gateway/config/schema.py "
                         f"or an entry in gateway/config_reference.DESCRIPTIONS): {missing}")


def test_no_description_names_a_missing_key() -> None:
    assert config_reference.stale_descriptions() == []


def test_reference_lists_every_key_once() -> None:
    text = config_reference.markdown()
    for key in config_reference.all_keys():
        assert text.count(f"| `{key.path}` |") == (0 if key.kind == "section" and "." not in key.path else 1), key


def test_the_configuration_page_is_generated() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert config_reference.MARKER in page
