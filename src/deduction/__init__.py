"""Deduction: event-sourced orchestration of simulation exercises on an external Engine."""

__version__ = "0.1.0"
