"""Security tests reuse the real redis-server fixtures of the window tests (for the shared rate limit)."""

from tests.policies.stores.conftest import redis_binary, redis_factory

__all__ = ["redis_binary", "redis_factory"]
