"""Fixtures for the cluster tests; they live in tests/support_cluster.py."""

from support_cluster import nodes, pg_url, prefix, redis

__all__ = ["nodes", "pg_url", "prefix", "redis"]
