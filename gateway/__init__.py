"""RecServe: an OpenAI-compatible gateway that offloads requests up a cascade of tiers by confidence."""

from importlib import metadata

try:
    __version__: str = metadata.version("recserve")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
