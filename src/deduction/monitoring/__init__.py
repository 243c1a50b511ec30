"""Monitoring: turns what the Engine reports into events (one save() per poll)."""

from deduction.monitoring.flows import TaskMonitor
from deduction.monitoring.findings import Outcome, PollReport, match_agents
from deduction.monitoring.reports import EngineReports

__all__ = ["EngineReports", "Outcome", "PollReport", "TaskMonitor", "match_agents"]
