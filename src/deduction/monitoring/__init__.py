"""Monitoring: turns what the Engine reports into events (one save() per poll)."""

from deduction.monitoring.flows import TaskMonitor
from deduction.monitoring.reports import EngineReports, Outcome, PollReport, match_agents

__all__ = ["EngineReports", "Outcome", "PollReport", "TaskMonitor", "match_agents"]
