"""Fixtures for the cluster tests; they live in tests/support_cluster.py."""

from support_cluster import nodes, pg_url, prefix, three_nodes

__all__ = ["nodes", "pg_url", "prefix", "three_nodes"]
