"""Helpers the tests import: example data, clients, servers, waits and snapshots (no fixtures)."""
