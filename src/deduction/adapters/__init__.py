"""Adapters: the outside world (HTTP, Engine, worker, PostgreSQL) around the application."""
