"""Fixtures for the cluster tests; they live in tests/support_cluster.py."""

from support_cluster import nodes, pg_url, prefix, redis, three_nodes

__all__ = ["nodes", "pg_url", "prefix", "redis", "three_nodes"]
